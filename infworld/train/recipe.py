"""Recipes: named YAML files that fully describe one training run.

A recipe picks a task (``task: tokenizer``), whose registered model-config dataclass receives the
``model:`` section; ``data:``, ``optim:`` and ``train:`` override :class:`DataConfig`,
:class:`OptimConfig` and :class:`TrainConfig`. ``base: other-recipe`` inherits another recipe
(sections merge key by key; ``name`` is never inherited). ``--set section.key=value`` overrides
are applied last, values parsed as YAML scalars. See docs/training.md.

Recipes are found by path, or by name (``doom-tiny-tokenizer``) in, in order: the folders listed
in ``$INFWORLD_RECIPES`` (``os.pathsep``-separated), ``./recipes`` (the working directory), the
``recipes/`` folder of a source checkout, and ``infworld/recipes`` shipped inside the package.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from infworld.config import apply_overrides, build_dataclass, coerce, deep_merge, to_dict
from infworld.data.episode import atomic_write_json
from infworld.errors import ConfigError

RECIPE_ENV = "INFWORLD_RECIPES"
RECIPE_SUFFIXES = (".yaml", ".yml")
SECTIONS = ("name", "task", "model", "data", "optim", "train")
# Placeholder in TrainConfig.out replaced by the recipe name.
NAME_PLACEHOLDER = "{name}"


def _check(cond: bool, key: str, value: Any, expected: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


@dataclass
class DataConfig:
    """Where the episodes are and how clips are cut (read by the task's ``batches``)."""

    root: str = ""  # dataset folder (meta.json + episodes/); relative paths are from the working dir
    clip_len: int = 16  # frames per training clip (1 for the tokenizer)
    val_episodes: int = 1  # the last N episodes form the held-out ``val`` split
    revisit_dense: bool = False  # sample only clips that come back to places seen (final finetune)
    # validate on revisit clips only: the per-strategy validation losses then show what memory is
    # worth (on random clips the history rarely matters, so every strategy scores alike)
    val_revisit_dense: bool = False
    # clip frames at the end that must hold the revisit (0 = a quarter of the clip); memory clips
    # with ``model.memory.loss_on: returns`` set it to the window length so every clip has returns
    revisit_tail: int = 0
    # oversample interactions with a recorded effect (infworld/data/events.py): this share of the
    # training clips ends in one; event_extra names the per-frame extra whose change marks it
    event_share: float = 0.0
    event_extra: str = ""
    workers: int = 0  # DataLoader worker processes per rank

    def __post_init__(self) -> None:
        _check(self.clip_len >= 1, "data.clip_len", self.clip_len, "an int >= 1")
        _check(self.val_episodes >= 0, "data.val_episodes", self.val_episodes, "an int >= 0")
        _check(self.workers >= 0, "data.workers", self.workers, "an int >= 0")
        _check(self.revisit_tail >= 0, "data.revisit_tail", self.revisit_tail,
               "an int >= 0 (0 = clip_len // 4)")
        _check(0.0 <= self.event_share <= 1.0, "data.event_share", self.event_share, "a float in [0, 1]")
        _check(self.event_share == 0 or bool(self.event_extra), "data.event_extra", self.event_extra,
               "the name of a recorded per-frame extra (e.g. 'inventory') when data.event_share > 0")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio`` at the last step."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01  # not applied to norms, biases and embeddings
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "a float > 0")
        _check(all(0.0 <= b < 1.0 for b in self.betas), "optim.betas", self.betas, "two floats in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a float >= 0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "an int >= 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", self.min_lr_ratio, "a float in [0, 1]")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "a float >= 0 (0 = off)")


@dataclass
class TrainConfig:
    """The training loop. ``batch_size`` is per rank: the global batch is ``batch_size x world_size``."""

    steps: int = 10000  # optimizer steps; the LR schedule ends here
    batch_size: int = 8  # per rank
    max_minutes: float | None = None  # wall-clock budget of one session; stops cleanly with a checkpoint
    ema_decay: float = 0.999  # 0 disables the EMA (EMA weights = raw weights)
    log_every: int = 20
    eval_every: int = 500  # 0 = evaluate only at the end
    eval_batches: int = 8
    ckpt_every: int = 500  # 0 = checkpoint only at the end
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    grad_checkpointing: bool = False  # passed to the model config when it has this field
    out: str = "runs/" + NAME_PLACEHOLDER
    parallel: Literal["ddp", "fsdp"] = "ddp"  # ddp: replicate (WORLD_SIZE > 1); fsdp: shard (needs torchrun)
    # fsdp: module lists/dicts (by attribute name) whose children are the sharding units
    fsdp_blocks: tuple[str, ...] = ("blocks",)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "train.steps", self.steps, "an int >= 1")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an int >= 1")
        _check(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes", self.max_minutes,
               "null or a float > 0")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", self.ema_decay, "a float in [0, 1)")
        _check(self.log_every >= 1, "train.log_every", self.log_every, "an int >= 1")
        _check(self.eval_every >= 0, "train.eval_every", self.eval_every, "an int >= 0")
        _check(self.eval_batches >= 1, "train.eval_batches", self.eval_batches, "an int >= 1")
        _check(self.ckpt_every >= 0, "train.ckpt_every", self.ckpt_every, "an int >= 0")
        _check(bool(self.out), "train.out", self.out, "a non-empty folder path")


@dataclass
class Recipe:
    """A resolved recipe. ``model`` is an instance of the task's registered config dataclass."""

    name: str
    task: str
    model: Any = None  # filled with the task's default config when None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(bool(self.name) and "/" not in self.name, "name", self.name, "a non-empty name without '/'")
        if self.model is None:
            from infworld.train.task import get_task

            self.model = get_task(self.task)[0]()
        self.train.out = self.train.out.replace(NAME_PLACEHOLDER, self.name)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.out)


# ---------------------------------------------------------------------------------------------
# finding recipe files


def repo_root() -> Path:
    """The source checkout holding the package (``recipes/``, ``checkpoints/`` live here)."""
    return Path(__file__).resolve().parents[2]


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes by name, first match wins (see the module docstring)."""
    dirs = [Path(p) for p in os.environ.get(RECIPE_ENV, "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "recipes", repo_root() / "recipes"]
    try:
        dirs.append(Path(str(resources.files("infworld") / "recipes")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - zipped or odd installs
        pass
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def list_recipes() -> list[str]:
    names = {p.stem for d in recipe_dirs() for p in d.iterdir() if p.suffix in RECIPE_SUFFIXES}
    return sorted(names)


def find_recipe(name_or_path: str | os.PathLike, near: Path | None = None) -> Path:
    """The YAML file for a recipe path or name; ``near`` (a folder) is searched first."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in RECIPE_SUFFIXES or os.sep in text or "/" in text:
        if near is not None and not path.is_absolute() and (near / path).is_file():
            return near / path
        if path.is_file():
            return path
        raise ConfigError(f"recipe file {text!r} does not exist")
    for d in ([near] if near is not None else []) + recipe_dirs():
        for suffix in RECIPE_SUFFIXES:
            if (d / f"{text}{suffix}").is_file():
                return d / f"{text}{suffix}"
    raise ConfigError(
        f"unknown recipe {text!r}; known recipes: {list_recipes()} "
        f"(searched {[str(d) for d in recipe_dirs()]}; or pass a path to a .yaml file)"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"recipe {path}: cannot read YAML ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_raw(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe at ``path`` as a plain dict, with its ``base:`` chain merged in."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"recipe {path}: circular base chain {[p.name for p in chain + (path,)]}")
    data = _read_yaml(path)
    unknown = sorted(set(data) - set(SECTIONS) - {"base", "replace"})
    if unknown:
        valid = sorted(SECTIONS + ("base", "replace"))
        raise ConfigError(f"recipe {path}: unknown key(s) {unknown}; valid keys: {valid}")
    base = data.pop("base", None)
    replace = _replace_paths(path, data)
    data.setdefault("name", path.stem)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"recipe {path}: base: expected a recipe name or path, got {base!r}")
    parent = load_raw(find_recipe(base, near=path.parent), chain + (path,))
    parent.pop("name", None)
    merged = deep_merge(parent, data)
    for keys, value in replace:
        # every mapping on the path is a fresh merged dict (the child sets the path), so this never
        # writes into the parent's
        node = merged
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return merged


def _replace_paths(path: Path, data: dict[str, Any]) -> list[tuple[list[str], Any]]:
    """``replace: [model.memory.strategies, ...]``: dotted keys whose value in this recipe replaces
    the base's instead of merging key by key (a mapping that drops entries of the base's)."""
    raw = data.pop("replace", [])
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        raise ConfigError(f"recipe {path}: replace: expected a list of dotted keys such as "
                          f"model.memory.strategies, got {raw!r}")
    out = []
    for dotted in raw:
        keys, node = dotted.split("."), data
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                raise ConfigError(f"recipe {path}: replace: {dotted!r} is not set in this recipe (it "
                                  "replaces the base's value with this recipe's)")
            node = node[k]
        out.append((keys, node))
    return out


# ---------------------------------------------------------------------------------------------
# building and saving


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Build and check a :class:`Recipe` from a plain dict (a merged YAML, or a checkpoint's JSON)."""
    from infworld.train.task import get_task

    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; valid keys: {list(SECTIONS)}")
    if "task" not in data:
        raise ConfigError("missing 'task:' (the task to train, e.g. tokenizer or world)")
    task = coerce(data["task"], str, "task")
    config_cls, _ = get_task(task)
    return Recipe(
        name=coerce(data.get("name", ""), str, "name"),
        task=task,
        model=build_dataclass(config_cls, data.get("model") or {}, "model"),
        data=build_dataclass(DataConfig, data.get("data") or {}, "data"),
        optim=build_dataclass(OptimConfig, data.get("optim") or {}, "optim"),
        train=build_dataclass(TrainConfig, data.get("train") or {}, "train"),
    )


def load_recipe(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Find, merge (``base:``), override (``--set``) and check a recipe."""
    path = find_recipe(name_or_path)
    raw = apply_overrides(load_raw(path), list(overrides))
    try:
        return recipe_from_dict(raw)
    except ConfigError as exc:
        via = f" with overrides {list(overrides)}" if overrides else ""
        raise ConfigError(f"recipe {path}{via}: {exc}") from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """JSON-able form; ``recipe_from_dict(recipe_to_dict(r)) == r``."""
    return {f.name: to_dict(getattr(recipe, f.name)) for f in dataclasses.fields(recipe)}


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    atomic_write_json(path, recipe_to_dict(recipe))
