"""The world task on the Wan2.1 backbone (``model.backbone: wan``), end to end on a CPU: train the
tiny-test-wan recipe (random init, pixels tokenizer) with memory, export, roll out with hpmc and kv
from the export, bench smoke; the Wan VAE as the tokenizer (``wan-vae:PATH``); clear errors for an
unknown backbone and a tokenizer/backbone channel mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synthetic import make_dataset
from test_rollout_cli import train_and_export

from infworld.bench.schema import validate_results
from infworld.cli import main
from infworld.data.episode import episode_path, read_episode
from infworld.errors import CheckpointError, ConfigError
from infworld.memory.hpmc import COMPRESSED_KIND
from infworld.models.tokenizers import build_tokenizer
from infworld.models.wan import WanDiT
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import WorldModel

KEYS = ("move", "view", "interact")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dataset with poses and the tiny-test-wan recipe trained (window, hpmc, kv) and exported."""
    base = tmp_path_factory.mktemp("wan_world")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_dataset(base / "data")
        train_and_export("tiny-test-wan", data, base / "run", base / "model", "train.steps=6")
    finally:
        torch.set_num_threads(prev)
    return {"base": base, "data": data, "model": base / "model"}


def test_export_records_the_wan_backbone(setup):
    cfg = json.loads((setup["model"] / "config.json").read_text())["model_config"]
    assert cfg["backbone"] == "wan" and "dit" not in cfg
    assert cfg["wan"]["in_channels"] == 48 and cfg["wan"]["latent_size"] == [8, 8]  # pixels:4 on 32x32
    assert cfg["wan"]["max_frames"] == 6 and cfg["wan"]["weights"] == ""
    assert sorted(cfg["memory_modules"]) == ["hpmc", "kv", "window"]
    world = WorldModel.from_pretrained(str(setup["model"]))
    assert isinstance(world.dit, WanDiT) and world.dit.load_report is None  # nothing read from disk
    assert "hpmc" in world.net.memory_modules  # the jointly trained compressor came with the export
    rows = (setup["base"] / "run" / "metrics.csv").read_text().splitlines()
    losses = [float(r.split(",")[-1]) for r in rows if ",train/loss," in r]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("memory", ["hpmc", "kv"])
def test_rollout_with_memory(setup, memory):
    ep = read_episode(episode_path(setup["data"], 2))
    world = WorldModel.from_pretrained(str(setup["model"]), memory=memory, seed=0)
    assert world.memory.name == memory
    k = 4
    acts = {n: getattr(ep, n)[None] for n in KEYS}  # (1, L - 1) per field
    world.reset(ep.frames[None, :k], {n: a[:, : k - 1] for n, a in acts.items()}, poses=ep.pose[None, :k])
    sizes = []
    while world.index < 20:
        i = world.index
        out = world.step({n: a[:, i - 1 : i + 1] for n, a in acts.items()}, poses=ep.pose[None, i : i + 2])
        assert out.shape == (1, 2, 32, 32, 3) and out.dtype == np.uint8
        sizes.append(world.state_nbytes())
    ctx = world.last_context
    assert ctx is not None and ctx.num_frames > 0  # frames older than the window reached the model
    if memory == "hpmc":
        assert world.memory.module() is world.net.memory_modules["hpmc"]
        assert COMPRESSED_KIND in ctx.kinds.tolist()[0]
    assert sizes[-1] == sizes[len(sizes) // 2]  # flat state


def test_kv_with_dead_reckoned_poses(setup):
    """No poses at inference: kv integrates them from the actions (docs/memory.md)."""
    ep = read_episode(episode_path(setup["data"], 1))
    world = WorldModel.from_pretrained(str(setup["model"]), memory="kv", memory_cfg={"poses": "dead_reckon"})
    world.reset(ep.frames[None, :4], {n: getattr(ep, n)[None, :3] for n in KEYS})
    while world.index < 14:
        i = world.index
        world.step({n: getattr(ep, n)[None, i - 1 : i + 1] for n in KEYS})
    assert world.last_context is not None and world.last_context.num_frames > 0


def test_bench_smoke(setup, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--model", str(setup["model"]), "--data", str(setup["data"]), "--memory", "hpmc,kv",
                 "--protocols", "replay,revisit", "--steps", "1", "--context", "4", "--max-episodes", "1",
                 "--max-frames", "24", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    validate_results(res)
    assert set(res["variants"]) == {"hpmc", "kv"}
    for v in res["variants"].values():
        assert 0 < v["replay"]["psnr_mean_common"] < 100


def task_for(data, *overrides: str) -> WorldTask:
    recipe = load_recipe("tiny-test-wan", [f"data.root={data}", *overrides])
    return WorldTask(recipe.model, recipe)


def test_bad_backbone_and_channel_mismatch(setup):
    with pytest.raises(ConfigError, match=r"model\.backbone.*\['dit', 'wan'\].*'vit'"):
        task_for(setup["data"], "model.backbone=vit")
    with pytest.raises(ConfigError, match=r"model\.wan\.in_channels: 16 differs from the 48 latent channels"):
        task_for(setup["data"], "model.wan.in_channels=16")
    with pytest.raises(ConfigError, match="wan-vae:PATH"):  # weights are Wan's: name the tokenizer to use
        task_for(setup["data"], "model.wan.in_channels=16", "model.wan.weights=/nowhere")
    with pytest.raises(ConfigError, match=r"model\.wan\.frames_per_latent.*image mode"):
        task_for(setup["data"], "model.wan.frames_per_latent=4")
    with pytest.raises(ConfigError, match=r"model\.wan\.max_frames"):
        task_for(setup["data"], "model.wan.max_frames=3")
    cfg = json.loads((setup["model"] / "config.json").read_text())["model_config"]
    with pytest.raises(CheckpointError, match="unknown backbone 'vit'"):
        WorldTask.build_inference_model({**cfg, "backbone": "vit"})


def test_wan_vae_tokenizer_spec(setup, tmp_path):
    """``tokenizer: wan-vae:PATH`` derives the backbone's channels from the VAE and rebuilds from the export
    config without files; a backbone set for other channels is refused by name."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     attn_scales=[], temperal_downsample=[False, True, True],
                                     latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    vae.save_pretrained(tmp_path / "vae")
    spec = f"model.tokenizer=wan-vae:{tmp_path / 'vae'}"
    task = task_for(setup["data"], spec, "model.memory.strategies={}", "model.memory.settings={}",
                    "data.clip_len=4")
    assert task.dit_config.in_channels == 4 and tuple(task.dit_config.latent_size) == (4, 4)  # 32 / 8
    net = task.build_model()
    frames = torch.randint(0, 256, (1, 3, 3, 32, 32), dtype=torch.uint8)
    z = net.encode(frames)
    assert z.shape == (1, 3, 4, 4, 4)
    rebuilt = build_tokenizer(task.export_config()["tokenizer"], task.frame_size)
    rebuilt.load_state_dict(net.tokenizer.state_dict())
    assert torch.allclose(rebuilt.encode(frames[0]), z[0], atol=1e-5)
    with pytest.raises(ConfigError, match=r"model\.wan\.in_channels: 16 differs from the 4 latent channels"):
        task_for(setup["data"], spec, "model.wan.in_channels=16", "model.memory.strategies={}",
                 "model.memory.settings={}", "data.clip_len=4")


def test_gpu_recipe_resolves(monkeypatch, tmp_path):
    """wan-1.3b-doom selects the 1.3B Wan backbone sharded with FSDP; an unset weights variable is
    named as such (the VAE is the first thing it reads)."""
    r = load_recipe("wan-1.3b-doom")
    assert r.model.backbone == "wan" and r.train.parallel == "fsdp" and r.train.precision == "bf16"
    assert (r.model.wan.dim, r.model.wan.depth, r.model.wan.in_channels) == (1536, 30, 16)
    assert r.model.tokenizer == "wan-vae:$INFWORLD_WAN_DIR" and r.model.wan.weights == "$INFWORLD_WAN_DIR"
    monkeypatch.delenv("INFWORLD_WAN_DIR", raising=False)
    pytest.importorskip("diffusers")
    data = make_dataset(tmp_path / "data", episodes=1, length=4)
    recipe = load_recipe("wan-1.3b-doom", [f"data.root={data}"])
    with pytest.raises(CheckpointError, match="INFWORLD_WAN_DIR.*environment variable in it is unset"):
        WorldTask(recipe.model, recipe)
