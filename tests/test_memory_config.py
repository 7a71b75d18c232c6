"""Typed memory configs: one dataclass per strategy, built by the registry from dicts, checked by name,
recorded whole in exports and benchmark results (so a resumed benchmark notices any change)."""

from __future__ import annotations

import json
import shutil

import pytest

from infworld.bench.runner import _read_part, memory_settings
from infworld.errors import ConfigError, MemoryConfigError
from infworld.memory.base import MemoryConfig
from infworld.memory.full import FullConfig
from infworld.memory.hpmc import HPMCConfig
from infworld.memory.kvmemory import KVMemoryConfig
from infworld.memory.registry import (
    config_class,
    make_memory,
    memory_class,
    memory_config,
    memory_names,
    pretrained_memory_config,
)
from infworld.memory.vrag import VRAGConfig
from infworld.memory.window import WindowConfig
from infworld.models.loading import resolve_model_dir
from infworld.train.tasks.memory_train import MemoryTrainConfig, strategy_settings
from infworld.world import WorldModel

STRATEGIES = ["full", "hpmc", "kv", "vrag", "window"]
# a non-default value for every setting of every strategy
SETTINGS = {
    "window": {"budget": 8, "local_window": 8},
    "full": {"budget": 40, "local_window": 12, "plain": True},
    "hpmc": {"budget": 6, "local_window": 12, "factor": 3, "hidden": 8, "depth": 1, "max_levels": 4,
             "level_dim": 4, "encoder": "conv2d", "plain": True},
    "kv": {"budget": 6, "local_window": 12, "poses": "dead_reckon", "plain": True, "pose_scale": 128.0,
           "angle_weight": 0.5, "anchors": 2, "pool": 32, "gate": 0.7, "min_overlap": 0.1, "fov_deg": 75.0},
    "vrag": {"budget": 6, "local_window": 12, "poses": "dead_reckon", "plain": True, "pose_scale": 128.0,
             "angle_weight": 0.5, "capacity": 64},
}
CLASSES = {"window": WindowConfig, "full": FullConfig, "hpmc": HPMCConfig, "kv": KVMemoryConfig,
           "vrag": VRAGConfig}


def test_every_strategy_has_its_config_class_on_the_shared_base():
    assert memory_names() == STRATEGIES
    for name in STRATEGIES:
        cls = config_class(name)
        assert cls is CLASSES[name] and issubclass(cls, MemoryConfig)
        assert memory_class(name).config_class is cls
        assert cls.keys()[:2] == ["budget", "local_window"]  # what every strategy shares
        assert set(SETTINGS[name]) == set(cls.keys())  # the test covers every setting


@pytest.mark.parametrize("name", STRATEGIES)
def test_unknown_key_is_rejected_by_name(name):
    for build in (lambda: make_memory(name, budget=8, bogus=1),
                  lambda: config_class(name).from_dict({"bogus": 1}),
                  lambda: memory_config(name, {"bogus": 1})):
        with pytest.raises(MemoryConfigError) as err:
            build()
        msg = str(err.value)
        assert f"{name!r}" in msg and "'bogus'" in msg and "valid" in msg
        assert all(k in msg for k in config_class(name).keys())  # the valid keys are listed


@pytest.mark.parametrize("name", STRATEGIES)
def test_config_round_trips_dict_config_dict(name):
    cfg = config_class(name).from_dict(SETTINGS[name])
    assert cfg.to_dict() == SETTINGS[name]
    assert config_class(name).from_dict(cfg.to_dict()) == cfg
    default = config_class(name).from_dict({})
    assert config_class(name).from_dict(json.loads(json.dumps(default.to_dict()))) == default


@pytest.mark.parametrize("name", STRATEGIES)
def test_registry_builds_every_strategy_from_a_dict(name):
    mem = make_memory(name, **SETTINGS[name])
    assert isinstance(mem, memory_class(name)) and mem.config.to_dict() == SETTINGS[name]
    assert mem.budget == SETTINGS[name]["budget"] and mem.local_window == SETTINGS[name]["local_window"]
    same = make_memory(name, config_class(name).from_dict(SETTINGS[name]))
    assert same.config == mem.config
    with pytest.raises(MemoryConfigError, match="not both"):
        make_memory(name, mem.config, budget=4)


def test_settings_layer_and_values_are_checked_by_the_config():
    assert memory_config("kv", {"pool": 8}, {"gate": 1}).to_dict()["gate"] == 1.0  # int read as float
    assert memory_config("hpmc", {"hidden": 8}, {"compressor": {"hidden": 16}}).hidden == 16
    # the window's memory is its local window: budget and local_window are one setting
    assert memory_config("window", {"local_window": 6}).budget == 6
    assert memory_config("window", {"budget": 12, "local_window": 12}, {"budget": 5}).local_window == 5
    with pytest.raises(MemoryConfigError, match="one setting"):
        make_memory("window", budget=4, local_window=8)
    with pytest.raises(MemoryConfigError, match="'vrag'.*capacity"):
        memory_config("vrag", {"budget": 8, "capacity": 4})
    with pytest.raises(MemoryConfigError, match="'kv'.*poses"):
        memory_config("kv", {"poses": None})


@pytest.mark.parametrize("name", ["kv", "vrag"])
def test_results_and_exports_store_the_resolved_config_with_the_pose_source(name):
    settings = memory_settings(make_memory(name, poses="dead_reckon"))
    assert settings == config_class(name).from_dict({"poses": "dead_reckon"}).to_dict()
    assert settings["poses"] == "dead_reckon" and set(settings) == set(config_class(name).keys())
    train = MemoryTrainConfig(strategies={name: 1.0}, history=8, settings={name: {"budget": 4}})
    exported = strategy_settings(train, name, 10)
    assert exported["poses"] == "given" and exported["local_window"] == 10 and exported["budget"] == 4
    assert set(exported) == set(config_class(name).keys())


def _part(path, settings):
    path.write_text(json.dumps({"variant": "kv", "protocol": "replay", "memory": settings, "result": {}}))
    return path


def test_bench_resume_check_notices_a_change_of_pose_source(tmp_path):
    given = make_memory("kv", budget=4)
    part = _part(tmp_path / "kv.replay.json", memory_settings(given))
    assert _read_part(part, make_memory("kv", budget=4))["result"] == {}
    with pytest.raises(ConfigError, match="poses: 'given' there, 'dead_reckon' now"):
        _read_part(part, make_memory("kv", budget=4, poses="dead_reckon"))
    # a part recorded before configs were resolved (poses: None) cannot vouch for its pose source
    old = dict(memory_settings(given), poses=None)
    with pytest.raises(ConfigError, match="do not resolve"):
        _read_part(_part(tmp_path / "old.json", old), given)
    with pytest.raises(ConfigError, match="do not resolve"):
        _read_part(_part(tmp_path / "none.json", None), given)


def test_shipped_memory_model_loads_with_its_trained_settings():
    stored = json.loads((resolve_model_dir("doom-tiny-mem") / "config.json").read_text())
    assert set(stored["model_config"]["memory"]) >= {"hpmc", "kv", "vrag"}
    for name, trained in stored["model_config"]["memory"].items():
        world = WorldModel.from_pretrained("doom-tiny-mem", memory=name)
        cfg = world.memory.config.to_dict()
        assert {k: cfg[k] for k in trained} == trained and cfg.get("plain", False) is False, name


def test_shipped_plain_model_gets_plain_context_and_overrides_win():
    world = WorldModel.from_pretrained("doom-tiny-world", memory="vrag", memory_cfg={"poses": "dead_reckon"})
    cfg = world.memory.config
    assert cfg.plain is True and cfg.poses == "dead_reckon" and cfg.local_window == world.window


def test_a_stored_setting_that_no_longer_exists_is_a_clear_error(tmp_path):
    with pytest.raises(MemoryConfigError, match=r"model_config\.memory\.kv.*unknown setting.*'topk'"):
        pretrained_memory_config("kv", {"kv": {"budget": 8, "topk": 3}}, 16, source="m")
    export = tmp_path / "old-export"
    shutil.copytree(resolve_model_dir("doom-tiny-mem"), export)
    config = json.loads((export / "config.json").read_text())
    config["model_config"]["memory"]["vrag"]["retired"] = 1
    (export / "config.json").write_text(json.dumps(config))
    with pytest.raises(MemoryConfigError, match=r"old-export.*memory\.vrag.*'retired'.*valid: \[") as err:
        WorldModel.from_pretrained(str(export), memory="vrag")
    assert "capacity" in str(err.value)
    WorldModel.from_pretrained(str(export), memory="kv")  # the other strategies still load
