"""Config resolution: dataclasses from dicts, YAML recipes, base inheritance, --set overrides, errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from infworld.config import apply_overrides, build_dataclass, parse_override, to_dict
from infworld.errors import ConfigError
from infworld.train.recipe import (
    DataConfig,
    OptimConfig,
    Recipe,
    TrainConfig,
    find_recipe,
    list_recipes,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)
from infworld.train.tasks.tokenizer import TokenizerConfig


@dataclass
class Inner:
    width: int = 4
    ratio: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    size: tuple[int, int] = (8, 8)
    dims: tuple[int, ...] = (1, 2)
    tags: list[str] = field(default_factory=list)
    limit: float | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def write(path, text):
    path.write_text(text)
    return path


def test_build_dataclass_converts_types():
    obj = build_dataclass(Outer, {"size": [16, 32], "dims": [3], "tags": ["a"], "limit": 2, "flag": True,
                                  "inner": {"width": 8.0, "ratio": "1e-3"}})
    assert obj.size == (16, 32) and obj.dims == (3,) and obj.tags == ["a"]
    assert obj.limit == 2.0 and isinstance(obj.limit, float) and obj.flag is True
    assert obj.inner == Inner(width=8, ratio=1e-3)  # "1e-3" is a string in YAML 1.1; accepted for floats
    assert to_dict(obj)["size"] == [16, 32]
    assert build_dataclass(Outer, to_dict(obj)) == obj
    assert build_dataclass(Outer, {"limit": None}).limit is None


@pytest.mark.parametrize("data, key", [
    ({"size": [1, 2, 3]}, "size"),
    ({"size": "big"}, "size"),
    ({"flag": 1}, "flag"),
    ({"inner": {"width": 2.5}}, "inner.width"),
    ({"inner": {"width": True}}, "inner.width"),
    ({"inner": {"ratio": "fast"}}, "inner.ratio"),
    ({"limit": "none"}, "limit"),
    ({"name": ["a"]}, "name"),
    ({"inner": 3}, "inner"),
])
def test_wrong_types_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_dataclass(Outer, data)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_dataclass(Outer, {"inner": {"widht": 3}}, "model")
    assert "model.inner.widht" in str(err.value) and "width" in str(err.value) and "ratio" in str(err.value)


def test_overrides_parse_yaml_scalars():
    assert parse_override("train.steps=100") == (["train", "steps"], 100)
    assert parse_override("model.image_size=[32, 48]") == (["model", "image_size"], [32, 48])
    assert parse_override("train.max_minutes=null") == (["train", "max_minutes"], None)
    assert parse_override("data.root=a=b") == (["data", "root"], "a=b")
    out = apply_overrides({"train": {"steps": 5, "seed": 1}}, ["train.steps=7", "optim.lr=0.1"])
    assert out == {"train": {"steps": 7, "seed": 1}, "optim": {"lr": 0.1}}
    for bad in ["train.steps", "=3", "train..steps=3", "model.x=[1,"]:
        with pytest.raises(ConfigError, match="override"):
            parse_override(bad)
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": 3}, ["train.steps=1"])


def test_recipe_defaults_and_checks():
    r = Recipe(name="r", task="tokenizer")
    assert isinstance(r.model, TokenizerConfig) and r.train.out == "runs/r"
    assert r.data == DataConfig() and r.optim == OptimConfig()
    with pytest.raises(ConfigError, match="train.steps"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="optim.betas"):
        OptimConfig(betas=(0.9, 1.5))
    with pytest.raises(ConfigError, match="unknown task 'nope'.*tokenizer"):
        Recipe(name="r", task="nope")


def test_yaml_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "parent.yaml", "task: tokenizer\nmodel: {channels: 16, latent_channels: 4}\n"
                                    "train: {steps: 50, seed: 3}\n")
    child = write(tmp_path / "child.yaml", "base: parent\nmodel: {channels: 24}\ntrain: {steps: 70}\n")
    r = load_recipe(child)
    assert r.name == "child"  # the name is never inherited
    assert r.model.channels == 24 and r.model.latent_channels == 4  # sections merge key by key
    assert r.train.steps == 70 and r.train.seed == 3 and r.train.out == "runs/child"
    r2 = load_recipe(child, ["train.steps=5", "model.image_size=[32, 32]", "name=other", "optim.lr=1e-2"])
    assert (r2.train.steps, r2.model.image_size, r2.name, r2.optim.lr) == (5, (32, 32), "other", 0.01)
    assert r2.train.out == "runs/other"
    # the resolved recipe survives a JSON round trip (it is stored in checkpoints)
    assert recipe_from_dict(json.loads(json.dumps(recipe_to_dict(r2)))) == r2


def test_recipe_replace_drops_entries_of_the_base(tmp_path):
    """``replace:`` swaps a mapping whole where the ordinary merge would keep the base's other keys."""
    from infworld.train.recipe import load_raw

    write(tmp_path / "parent.yaml", "task: world\nmodel: {memory: {strategies: {kv: 1.0, vrag: 1.0}, "
                                    "history: 96}}\n")
    merged = write(tmp_path / "merged.yaml", "base: parent\nmodel: {memory: {strategies: {vrag: 2.0}}}\n")
    assert load_raw(merged)["model"]["memory"]["strategies"] == {"kv": 1.0, "vrag": 2.0}
    swapped = write(tmp_path / "swapped.yaml", "base: parent\nreplace: [model.memory.strategies]\n"
                                               "model: {memory: {strategies: {vrag: 2.0}}}\n")
    raw = load_raw(swapped)
    assert raw["model"]["memory"] == {"strategies": {"vrag": 2.0}, "history": 96}
    assert load_raw(tmp_path / "parent.yaml")["model"]["memory"]["strategies"] == {"kv": 1.0, "vrag": 1.0}
    for bad, match in (("replace: model.memory\n", "list of dotted keys"),
                       ("replace: [model.memory.settings]\nmodel: {memory: {}}\n", "not set in this recipe")):
        with pytest.raises(ConfigError, match=match):
            load_raw(write(tmp_path / "bad.yaml", "base: parent\n" + bad))


def test_recipe_errors(tmp_path):
    write(tmp_path / "a.yaml", "base: b\ntask: tokenizer\n")
    write(tmp_path / "b.yaml", "base: a\n")
    with pytest.raises(ConfigError, match="circular"):
        load_recipe(tmp_path / "a.yaml")
    bad_top = write(tmp_path / "top.yaml", "task: tokenizer\nmodle: {}\n")
    with pytest.raises(ConfigError, match=r"modle.*valid keys"):
        load_recipe(bad_top)
    ok = write(tmp_path / "ok.yaml", "task: tokenizer\n")
    with pytest.raises(ConfigError, match=r"model\.chanels.*channels"):
        load_recipe(ok, ["model.chanels=3"])
    with pytest.raises(ConfigError, match=r"train\.steps: expected int"):
        load_recipe(ok, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"unknown key.*'trian'"):
        load_recipe(ok, ["trian.steps=3"])
    with pytest.raises(ConfigError, match="downsample"):
        load_recipe(ok, ["model.downsample=6"])
    no_task = write(tmp_path / "notask.yaml", "train: {steps: 3}\n")
    with pytest.raises(ConfigError, match="task"):
        load_recipe(no_task)
    listy = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(listy)
    with pytest.raises(ConfigError, match=r"unknown recipe 'no-such-recipe'.*tiny-test-tokenizer"):
        load_recipe("no-such-recipe")
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_shipped_recipes_resolve_by_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # lookup by name must not depend on the working directory
    assert {"tiny-test-tokenizer", "doom-tiny-tokenizer"} <= set(list_recipes())
    r = load_recipe("doom-tiny-tokenizer")
    assert r.task == "tokenizer" and r.model.image_size == (64, 64) and r.data.root == "data/doom-train"
    assert find_recipe("tiny-test-tokenizer").name == "tiny-test-tokenizer.yaml"


def test_recipe_env_dirs_take_precedence(monkeypatch, tmp_path):
    write(tmp_path / "tiny-test-tokenizer.yaml", "task: tokenizer\ntrain: {steps: 3}\n")
    monkeypatch.setenv("INFWORLD_RECIPES", str(tmp_path))
    assert load_recipe("tiny-test-tokenizer").train.steps == 3
