"""Loading (and writing) Wan2.1 transformer weights in the original and in diffusers' layout.

Two layouts exist for the same tensors (same shapes, different names):

* **original** (github.com/Wan-Video/Wan2.1, ``wan/modules/model.py``; the ``Wan-AI/Wan2.1-T2V-1.3B``
  folder: ``diffusion_pytorch_model.safetensors`` + ``config.json`` with ``dim``, ``num_layers``...):
  ``patch_embedding``, ``text_embedding.{0,2}``, ``time_embedding.{0,2}``, ``time_projection.1``,
  ``blocks.N.{self_attn,cross_attn}.{q,k,v,o,norm_q,norm_k}``, ``blocks.N.norm3`` (the
  cross-attention norm), ``blocks.N.ffn.{0,2}``, ``blocks.N.modulation``, ``head.head``,
  ``head.modulation``. Our parameter names are these, so this layout loads as is.
* **diffusers** (``WanTransformer3DModel``; the ``...-Diffusers`` folders: ``transformer/`` with
  ``config.json`` + ``diffusion_pytorch_model.safetensors`` or shards and an ``.index.json``):
  ``condition_embedder.*``, ``attn1``/``attn2.to_{q,k,v,out.0}``, ``norm2`` (cross-attention),
  ``ffn.net.{0.proj,2}``, ``scale_shift_table``, ``proj_out``; renamed by the tables below (the
  inverse of diffusers' ``scripts/convert_wan_to_diffusers.py``).

:func:`load_wan_weights` finds the files (a file, a folder, a pipeline folder with ``transformer/``,
an index with shards), tells the layout from the keys, checks ``config.json`` against the model's
config and every tensor's shape, copies the tensors and returns a :class:`LoadReport` of missing,
unexpected and new (world-model adapter) keys. Every failure is a CheckpointError naming the file,
the key and the shapes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.errors import CheckpointError

# diffusers name -> original name; prefixes of whole dotted components.
_TOP_LEVEL = {
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "proj_out.": "head.head.",
    "scale_shift_table": "head.modulation",
}
_IN_BLOCK = {
    "attn1.to_q.": "self_attn.q.", "attn1.to_k.": "self_attn.k.", "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.", "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.", "attn2.to_k.": "cross_attn.k.", "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.", "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.",
    "norm2.": "norm3.",
    "ffn.net.0.proj.": "ffn.0.", "ffn.net.2.": "ffn.2.",
    "scale_shift_table": "modulation",
}
# Prefixes some tools put before every key (ComfyUI repacks, training wrappers), stripped when all
# keys carry them.
_WRAPPER_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _rename(key: str, top: dict[str, str], block: dict[str, str]) -> str:
    if key.startswith("blocks."):
        head, idx, rest = key.split(".", 2) if key.count(".") >= 2 else (key, "", "")
        for old, new in block.items():
            if rest == old or rest.startswith(old):
                return f"{head}.{idx}.{new}{rest[len(old):]}"
        return key
    for old, new in top.items():
        if key == old or key.startswith(old):
            return new + key[len(old):]
    return key


def diffusers_to_original(key: str) -> str:
    """A diffusers ``WanTransformer3DModel`` key -> the original Wan2.1 key (unknown keys unchanged)."""
    return _rename(key, _TOP_LEVEL, _IN_BLOCK)


def original_to_diffusers(key: str) -> str:
    """An original Wan2.1 key -> the diffusers key (unknown keys unchanged)."""
    return _rename(key, {v: k for k, v in _TOP_LEVEL.items()}, {v: k for k, v in _IN_BLOCK.items()})


def detect_layout(keys: list[str]) -> str:
    """"original" or "diffusers" from the key names; CheckpointError when neither or both."""
    diff = any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys)
    orig = any(k.startswith(("time_embedding.", "head.head.")) or ".self_attn." in k for k in keys)
    if diff == orig:
        raise CheckpointError("cannot tell the weights' layout from their keys (expected Wan2.1 "
                              "'time_embedding.*'/'blocks.N.self_attn.*' or diffusers "
                              "'condition_embedder.*'/'blocks.N.attn1.*'); set wan.weights_layout")
    return "diffusers" if diff else "original"


# ---------------------------------------------------------------------------------------------
# finding and reading files


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """Expand ``$VARS`` and ``~``; a missing path is a CheckpointError naming it."""
    raw = str(path)
    p = Path(os.path.expandvars(raw)).expanduser()
    if not p.exists():
        hint = " (an environment variable in it is unset)" if "$" in str(p) else ""
        raise CheckpointError(f"Wan weights {raw!r}: {str(p)!r} does not exist{hint}; point wan.weights at "
                              "the folder of Wan2.1-T2V-1.3B (original layout) or its diffusers "
                              "'transformer/' folder (docs/scale.md)")
    return p


def find_weight_files(path: str | os.PathLike) -> list[Path]:
    """The checkpoint files of a transformer: ``path`` itself, the shards named by an index json, or
    the safetensors of the folder (``transformer/`` inside a diffusers pipeline folder)."""
    p = resolve_weights_path(path)
    if p.is_file():
        if p.name.endswith(".index.json"):
            return _shards(p)
        return [p]
    if (p / "transformer").is_dir():
        p = p / "transformer"
    indexes = sorted(p.glob("*.safetensors.index.json")) + sorted(p.glob("*.bin.index.json"))
    if indexes:
        return _shards(indexes[0])
    named = sorted(p.glob("diffusion_pytorch_model*.safetensors")) + sorted(p.glob("model*.safetensors"))
    files = named or sorted(p.glob("*.safetensors"))
    if not files:
        files = sorted(p.glob("diffusion_pytorch_model*.bin"))
    if not files:
        raise CheckpointError(f"Wan weights {str(p)!r}: no transformer weights found (expected "
                              "diffusion_pytorch_model*.safetensors, *.safetensors or an .index.json "
                              "with its shards)")
    return files


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(index)!r}: not a readable weights index ({exc!r})") from exc
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise CheckpointError(f"{str(index)!r}: shard(s) {missing} listed in the index are missing from "
                              f"{str(index.parent)!r} (a partial download?)")
    return [index.parent / n for n in names]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise CheckpointError(f"{str(path)!r}: expected a state dict, got {type(sd).__name__}")
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


def list_tensors(files: list[Path]) -> list[tuple[str, tuple[int, ...], Path]]:
    """(key, shape, file) of every tensor of the files, without reading the data of safetensors."""
    out = []
    for path in files:
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt", device="cpu") as fh:
                    out += [(k, tuple(fh.get_slice(k).get_shape()), path) for k in fh.keys()]
            else:
                out += [(k, tuple(v.shape), path) for k, v in _read_state_dict(path).items()]
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, named for the user
            raise CheckpointError(f"{str(path)!r}: cannot read weights ({exc})") from exc
    return out


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """(key, tensor, file) for every tensor of the files, one at a time (low peak memory)."""
    for path in files:
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt", device="cpu") as fh:
                    for key in fh.keys():
                        yield key, fh.get_tensor(key), path
            else:
                for key, value in _read_state_dict(path).items():
                    yield key, value, path
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, named for the user
            raise CheckpointError(f"{str(path)!r}: cannot read weights ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# config.json


def weights_config(path: str | os.PathLike) -> dict[str, Any]:
    """Architecture fields (WanConfig names) from the ``config.json`` beside the weights ({} if none).

    Reads both the original (``dim``, ``num_layers``, ``in_dim``...) and diffusers'
    (``num_attention_heads`` x ``attention_head_dim``, ``in_channels``...) config formats.
    """
    p = resolve_weights_path(path)
    folder = p.parent if p.is_file() else (p / "transformer" if (p / "transformer").is_dir() else p)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return {}
    try:
        raw = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{str(cfg_path)!r}: unreadable config ({exc})") from exc
    out: dict[str, Any] = {}
    if "num_attention_heads" in raw:  # diffusers
        out["num_heads"] = raw["num_attention_heads"]
        if "attention_head_dim" in raw:
            out["dim"] = raw["num_attention_heads"] * raw["attention_head_dim"]
        names = {"num_layers": "depth", "in_channels": "in_channels", "out_channels": "out_channels",
                 "ffn_dim": "ffn_dim", "freq_dim": "freq_dim", "text_dim": "text_dim", "eps": "eps",
                 "cross_attn_norm": "cross_attn_norm", "patch_size": "patch_size"}
    else:  # original WanModel
        names = {"dim": "dim", "num_heads": "num_heads", "num_layers": "depth", "in_dim": "in_channels",
                 "out_dim": "out_channels", "ffn_dim": "ffn_dim", "freq_dim": "freq_dim",
                 "text_dim": "text_dim", "text_len": "text_len", "eps": "eps",
                 "cross_attn_norm": "cross_attn_norm", "patch_size": "patch_size"}
    for src, dst in names.items():
        if raw.get(src) is not None:
            out[dst] = tuple(raw[src]) if isinstance(raw[src], list) else raw[src]
    if raw.get("image_dim") or raw.get("added_kv_proj_dim") or raw.get("model_type") in ("i2v", "flf2v"):
        raise CheckpointError(f"{str(cfg_path)!r}: an image-to-video Wan model; the world backbone loads "
                              "text-to-video weights (Wan2.1-T2V-*)")
    out["_file"] = str(cfg_path)
    return out


def check_config(model_cfg: Any, found: dict[str, Any]) -> None:
    """Raise CheckpointError when ``config.json`` describes another size than ``model_cfg``."""
    where = found.get("_file", "config.json")
    for key, value in found.items():
        if key.startswith("_") or key == "text_len":  # text_len does not change any tensor
            continue
        ours = getattr(model_cfg, key)
        if key == "out_channels":
            ours = model_cfg.out_dim
        if isinstance(ours, float) or isinstance(value, float):
            same = abs(float(ours) - float(value)) <= 1e-12
        else:
            same = (tuple(ours) == tuple(value)) if isinstance(ours, (tuple, list)) else ours == value
        if not same:
            raise CheckpointError(f"{where}: {key} = {value!r}, the model config has {ours!r}; the weights "
                                  "are for another model size (set the wan.* sizes to match, docs/scale.md)")


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class LoadReport:
    """What :func:`load_wan_weights` did. Keys are ours (the original layout's names) except
    ``unexpected``, which are the checkpoint's own names."""

    layout: str
    files: list[str]
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # Wan tensors of the model absent from the checkpoint
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors the model does not have
    new: list[str] = field(default_factory=list)  # world-model additions, left at their (zero) init

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded ({self.layout} layout, {len(self.files)} file(s)), "
                f"{len(self.missing)} missing {self.missing[:8]}, {len(self.unexpected)} unexpected "
                f"{self.unexpected[:8]}, {len(self.new)} new (world-model adapters)")


def wan_keys(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's Wan tensors by name (parameters and saved buffers) and the names of its adapters."""
    from infworld.models.wan.transformer import ADAPTER_PREFIXES

    sd = model.state_dict()
    new = [k for k in sd if k.startswith(ADAPTER_PREFIXES)]
    return {k: v for k, v in sd.items() if not k.startswith(ADAPTER_PREFIXES)}, new


@torch.no_grad()
def load_wan_weights(model: nn.Module, path: str | os.PathLike, layout: str = "auto",
                     strict: bool = True) -> LoadReport:
    """Copy Wan2.1 transformer weights from ``path`` into ``model`` (a WanDiT); see module docstring.

    ``layout``: "auto", "original" or "diffusers". ``strict``: missing or unexpected keys raise
    CheckpointError (naming them); otherwise they are only reported. A wrong shape always raises,
    naming the file, the key and both shapes.
    """
    if layout not in ("auto", "original", "diffusers"):
        raise CheckpointError(f"wan.weights_layout: expected auto/original/diffusers, got {layout!r}")
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        check_config(cfg, weights_config(path))
    files = find_weight_files(path)
    ours, new = wan_keys(model)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))

    # 1. names and shapes only: every check happens before any tensor is copied
    entries = list_tensors(files)
    keys = [k for k, _, _ in entries]
    prefix = next((p for p in _WRAPPER_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")
    kind = detect_layout([k[len(prefix):] for k in keys]) if layout == "auto" else layout
    report = LoadReport(layout=kind, files=[str(f) for f in files], new=new)
    plan: dict[tuple[Path, str], str] = {}  # (file, checkpoint key) -> our name
    mismatched = []
    for key, shape, src in entries:
        bare = key[len(prefix):]
        name = diffusers_to_original(bare) if kind == "diffusers" else bare
        if name not in ours:
            report.unexpected.append(key)
            continue
        if shape != tuple(params[name].shape):
            mismatched.append(f"{str(src)!r}: {key!r} (-> {name!r}) has shape {shape}, the model expects "
                              f"{tuple(params[name].shape)}")
            continue
        plan[(src, key)] = name
    if mismatched:
        more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
        raise CheckpointError("Wan weights do not fit the model: " + "; ".join(mismatched[:3]) + more +
                              "; the weights are for another model size or config")
    report.missing = sorted(set(ours) - set(plan.values()))
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(f"Wan weights {str(path)!r}: missing keys {report.missing[:20]}, unexpected "
                              f"keys {report.unexpected[:20]} ({kind} layout); a partial or foreign "
                              "checkpoint (set wan.strict_weights: false to load anyway)")
    # 2. copy, one tensor at a time
    for key, tensor, src in iter_tensors(files):
        name = plan.get((src, key))
        if name is not None:
            params[name].copy_(tensor.to(params[name].dtype))
            report.loaded.append(name)
    return report


def save_wan_weights(model: nn.Module, folder: str | os.PathLike, layout: str = "original",
                     max_shard_bytes: int = 0) -> Path:
    """Write the model's Wan tensors (not the adapters) as ``folder``/diffusion_pytorch_model*.safetensors
    in ``layout`` ("original" or "diffusers"), sharded with an index json when ``max_shard_bytes``
    is set and exceeded, plus a config.json in that layout. Returns the folder."""
    from safetensors.torch import save_file

    if layout not in ("original", "diffusers"):
        raise CheckpointError(f"save_wan_weights: layout must be 'original' or 'diffusers', got {layout!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    ours, _ = wan_keys(model)
    sd = {(original_to_diffusers(k) if layout == "diffusers" else k): v.detach().contiguous().cpu()
          for k, v in ours.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    stem = "diffusion_pytorch_model"
    if len(shards) == 1:
        save_file(shards[0], str(out / f"{stem}.safetensors"))
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / name))
            weight_map.update({k: name for k in shard})
        index = {"metadata": {}, "weight_map": weight_map}
        (out / f"{stem}.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text(json.dumps(_config_json(model.cfg, layout), indent=2))
    return out


def _config_json(cfg: Any, layout: str) -> dict[str, Any]:
    if layout == "diffusers":
        return {"_class_name": "WanTransformer3DModel", "patch_size": list(cfg.patch_size),
                "num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim,
                "in_channels": cfg.in_channels, "out_channels": cfg.out_dim, "text_dim": cfg.text_dim,
                "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim, "num_layers": cfg.depth,
                "cross_attn_norm": cfg.cross_attn_norm, "qk_norm": "rms_norm_across_heads", "eps": cfg.eps}
    return {"_class_name": "WanModel", "model_type": "t2v", "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
            "freq_dim": cfg.freq_dim, "in_dim": cfg.in_channels, "out_dim": cfg.out_dim,
            "num_heads": cfg.num_heads, "num_layers": cfg.depth, "text_len": cfg.text_len, "eps": cfg.eps}
