"""The Wan2.1 backbone: equal to diffusers' WanTransformer3DModel on the same weights, loads both
checkpoint layouts with a key report, streams through the KV cache, and its world-model adapters
start as the identity. Tiny random configs, CPU, no downloads."""

from __future__ import annotations

import json
import re

import pytest
import torch

from infworld.errors import CheckpointError, ConfigError
from infworld.models.action import ActionConfig
from infworld.models.kvcache import KVCache, KVCacheConfig
from infworld.models.wan import WanConfig, WanDiT, build_backbone, load_wan_weights, save_wan_weights
from infworld.models.wan.latents import group_actions, latent_poses

H, HD, LAYERS, C, TEXT, LTEXT = 2, 12, 2, 4, 16, 8


def tiny_cfg(**kw) -> WanConfig:
    base = dict(in_channels=C, latent_size=(4, 6), dim=H * HD, ffn_dim=40, depth=LAYERS, num_heads=H,
                freq_dim=32, text_dim=TEXT, text_len=LTEXT, max_frames=8,
                actions=ActionConfig(num_interact=3))
    base.update(kw)
    return WanConfig(**base)


def randomize(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny random diffusers WanTransformer3DModel, saved in diffusers' layout."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=H, attention_head_dim=HD, in_channels=C, out_channels=C,
        text_dim=TEXT, freq_dim=32, ffn_dim=40, num_layers=LAYERS, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64).eval()
    randomize(ref, 1)
    folder = tmp_path_factory.mktemp("wan-diffusers")
    ref.save_pretrained(folder)
    return ref, folder


def run_ref(ref, x, t, context):
    """diffusers on our shapes: x (B, F, C, h, w), per-frame t (B, F) in [0, 1]."""
    n = (x.shape[-2] // 2) * (x.shape[-1] // 2)
    ts = (t.float() * 1000.0).repeat_interleave(n, dim=1)  # one level per token
    with torch.no_grad():
        return ref(x.transpose(1, 2), ts, context, return_dict=False)[0].transpose(1, 2)


def to_original_layout(sd: dict) -> dict:
    """diffusers WanTransformer3DModel keys -> original Wan2.1 keys (written independently of weights.py,
    after diffusers' scripts/convert_wan_to_diffusers.py)."""
    table = [(r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
             (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
             (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
             (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
             (r"^condition_embedder\.time_proj\.", "time_projection.1."),
             (r"^proj_out\.", "head.head."), (r"^scale_shift_table$", "head.modulation"),
             (r"\.scale_shift_table$", ".modulation"), (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
             (r"\.attn2\.to_out\.0\.", ".cross_attn.o."), (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
             (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."), (r"\.attn1\.norm_", ".self_attn.norm_"),
             (r"\.attn2\.norm_", ".cross_attn.norm_"), (r"\.norm2\.", ".norm3."),
             (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2.")]
    out = {}
    for k, v in sd.items():
        for pat, rep in table:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def save_original(ref, folder) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in to_original_layout(ref.state_dict()).items()}
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(
        {"_class_name": "WanModel", "dim": H * HD, "ffn_dim": 40, "freq_dim": 32, "in_dim": C, "out_dim": C,
         "num_heads": H, "num_layers": LAYERS, "text_len": LTEXT, "eps": 1e-6, "model_type": "t2v"}))


def inputs(b=2, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, f, C, 4, 6, generator=g), torch.rand(b, f, generator=g),
            torch.randn(b, LTEXT, TEXT, generator=g))


def test_equals_diffusers_through_both_layouts(reference, tmp_path):
    ref, folder = reference
    x, t, ctx = inputs()
    outs = []
    save_original(ref, tmp_path / "orig")
    for path, layout in ((folder, "diffusers"), (tmp_path / "orig", "original")):
        ours = WanDiT(tiny_cfg()).eval()
        report = load_wan_weights(ours, path)
        assert report.layout == layout and not report.missing and not report.unexpected
        assert len(report.loaded) == len(ref.state_dict())
        with torch.no_grad():
            # causal masking, actions and memory off: Wan's own bidirectional network
            outs.append(ours(x, t, None, context=ctx, causal=False))
            # one level per clip, and the fixed null context = diffusers' zero padding of a prompt
            t1 = t[:, :1].expand_as(t)
            null = ours(x, t1, None, causal=False)
        ref_null = run_ref(ref, x, t1, torch.zeros(2, LTEXT, TEXT))
        torch.testing.assert_close(null, ref_null, atol=1e-5, rtol=1e-5)
    expected = run_ref(ref, x, t, ctx)
    for out in outs:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_block_causal_attention(reference, tmp_path):
    """Causal masking: one layer's frame f is what Wan computes for frames 0..f alone (with more
    layers the earlier frames of that prefix would see frame f), and no output depends on a later
    frame."""
    diffusers = pytest.importorskip("diffusers")
    ref, folder = reference
    one = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=H, attention_head_dim=HD, in_channels=C, out_channels=C,
        text_dim=TEXT, freq_dim=32, ffn_dim=40, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64).eval()
    randomize(one, 2)
    one.save_pretrained(tmp_path)
    ours = build_backbone({**tiny_cfg(depth=1).__dict__, "weights": str(tmp_path)}).eval()
    x, t, ctx = inputs(f=4, seed=1)
    with torch.no_grad():
        out = ours(x, t, None, context=ctx)
    for f in range(4):
        expected = run_ref(one, x[:, : f + 1], t[:, : f + 1], ctx)[:, f]
        torch.testing.assert_close(out[:, f], expected, atol=1e-5, rtol=1e-5)
    deep = build_backbone({**tiny_cfg().__dict__, "weights": str(folder)}).eval()
    x2 = x.clone()
    x2[:, 2:] += 1.0
    with torch.no_grad():
        a, b = deep(x, t, None, context=ctx), deep(x2, t, None, context=ctx)
    torch.testing.assert_close(a[:, :2], b[:, :2], atol=0, rtol=0)
    assert (a[:, 2:] - b[:, 2:]).abs().max() > 1e-3


def test_sharded_checkpoint_and_partial_download(reference, tmp_path):
    ref, _ = reference
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    ours = WanDiT(tiny_cfg())
    report = load_wan_weights(ours, tmp_path)
    assert report.layout == "diffusers" and len(report.files) == len(shards)
    assert not report.missing and not report.unexpected
    (tmp_path / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=re.escape(shards[-1])):
        load_wan_weights(WanDiT(tiny_cfg()), tmp_path)


def test_renamed_key_is_reported_by_name(reference, tmp_path):
    from safetensors.torch import save_file

    ref, _ = reference
    sd = {k: v.contiguous() for k, v in to_original_layout(ref.state_dict()).items()}
    sd["blocks.1.self_attn.query.weight"] = sd.pop("blocks.1.self_attn.q.weight")
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    report = load_wan_weights(WanDiT(tiny_cfg()), tmp_path, strict=False)
    assert report.missing == ["blocks.1.self_attn.q.weight"]
    assert report.unexpected == ["blocks.1.self_attn.query.weight"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.self_attn\.q\.weight.*self_attn\.query"):
        load_wan_weights(WanDiT(tiny_cfg()), tmp_path)


def test_wrong_shape_and_wrong_size_name_file_key_and_shapes(reference, tmp_path):
    from safetensors.torch import save_file

    ref, folder = reference
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    sd["blocks.0.ffn.net.0.proj.weight"] = torch.zeros(48, H * HD)  # ffn 48 instead of 40
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_wan_weights(WanDiT(tiny_cfg()), tmp_path)
    msg = str(err.value)
    assert "diffusion_pytorch_model.safetensors" in msg and "blocks.0.ffn.net.0.proj.weight" in msg
    assert "(48, 24)" in msg and "(40, 24)" in msg
    # a config.json for another size is refused before any tensor is read
    with pytest.raises(CheckpointError, match=r"config\.json: ffn_dim = 40.*64"):
        load_wan_weights(WanDiT(tiny_cfg(ffn_dim=64)), folder)
    # a tokenizer with other channels than the weights (VAE/backbone mismatch)
    with pytest.raises(CheckpointError, match=r"in_channels = 4.*8"):
        build_backbone({**tiny_cfg(in_channels=8).__dict__, "weights": str(folder)})


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wan_weights(WanDiT(tiny_cfg()), tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no transformer weights found"):
        load_wan_weights(WanDiT(tiny_cfg()), tmp_path)
    with pytest.raises(CheckpointError, match="WAN_TEST_UNSET"):
        load_wan_weights(WanDiT(tiny_cfg()), "$WAN_TEST_UNSET/Wan2.1-T2V-1.3B")
    with pytest.raises(ConfigError, match="temporal patch"):
        WanDiT(tiny_cfg(patch_size=(2, 2, 2)))


def test_save_in_diffusers_layout_loads_in_diffusers(reference, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    ref, folder = reference
    ours = build_backbone({**tiny_cfg().__dict__, "weights": str(folder)})
    save_wan_weights(ours, tmp_path / "d", layout="diffusers", max_shard_bytes=30_000)
    from safetensors.torch import load_file

    # (from_pretrained would need `accelerate`: build from our config.json, load our shards strictly)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    back = diffusers.WanTransformer3DModel.from_config(config)
    index = json.loads((tmp_path / "d" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    sd = {}
    for shard in sorted(set(index["weight_map"].values())):
        sd.update(load_file(str(tmp_path / "d" / shard)))
    back.load_state_dict(sd, strict=True)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, atol=0, rtol=0)
    save_wan_weights(ours, tmp_path / "o", layout="original")
    report = load_wan_weights(WanDiT(tiny_cfg()), tmp_path / "o")
    assert report.layout == "original" and not report.missing and not report.unexpected


def world_cfg(**kw) -> WanConfig:
    return tiny_cfg(frames_per_latent=4, action_adaln=True, num_frame_kinds=3, pose_dim=6, **kw)


def random_actions(b, f, r=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"move": torch.randint(-1, 10, (b, f, r), generator=g),
            "view": torch.randint(0, 10, (b, f, r), generator=g),
            "interact": torch.randint(0, 3, (b, f, r), generator=g)}


def test_zero_initialised_adapters_leave_the_loaded_model_unchanged(reference):
    ref, folder = reference
    model = build_backbone({**world_cfg().__dict__, "weights": str(folder)}).eval()
    new = sorted({k.split(".")[0] for k in model.load_report.new})
    assert new == ["action_adapter", "kind_embed", "pose_embed"]
    x, t, _ = inputs(f=3, seed=2)
    kinds = torch.tensor([[1, 2, 0], [0, 1, 1]])
    poses = torch.randn(2, 3, 6)
    with torch.no_grad():
        plain = model(x, t, None, causal=False)
        full = model(x, t, random_actions(2, 3), kinds=kinds, poses=poses, causal=False)
    torch.testing.assert_close(full, plain, atol=0, rtol=0)
    torch.testing.assert_close(plain, run_ref(ref, x, t, torch.zeros(2, LTEXT, TEXT)), atol=1e-5, rtol=1e-5)
    # ...and every adapter receives a gradient, so training moves it away from zero
    model.train()
    loss = model(x, t, random_actions(2, 3), kinds=kinds, poses=poses).square().mean()
    loss.backward()
    for name in ("action_adapter.to_tokens.weight", "action_adapter.to_mod.2.weight", "kind_embed.weight",
                 "pose_embed.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_streaming_with_kv_cache_equals_full_block_causal_forward():
    """Chunks through the KV cache (window, eviction, relative positions, pinned memory) give the
    full forward's outputs, with actions, kinds and poses live."""
    from infworld.memory.base import MemoryContext
    from infworld.memory.context import memory_past

    torch.manual_seed(0)
    model = WanDiT(world_cfg()).eval()
    randomize(model, 3, std=0.2)  # adapters non-zero too
    b, f, window, chunk = 2, 7, 3, 2
    x, t, _ = inputs(b, f, seed=4)
    acts = random_actions(b, f, seed=5)
    mem = MemoryContext(latents=torch.randn(b, 2, C, 4, 6), actions={k: v[:, :2, 0] for k, v in acts.items()},
                        positions=torch.tensor([-9.0, -5.0]), poses=None)
    with torch.no_grad():
        prefix = memory_past(model, mem, None)  # pinned, at absolute positions -9 and -5
        full = model(x, t, acts, past=prefix, window=window)
        d = model.cfg
        cache = KVCache(KVCacheConfig(d.depth, d.num_heads, d.head_dim, d.tokens_per_frame,
                                      capacity=window - 1 + chunk), b)
        outs = []
        for lo in range(0, f, chunk):
            hi = min(lo + chunk, f)
            base = lo - len(cache)
            pinned = memory_past(model, mem, None, shift=float(-base))  # the same absolute positions
            cached = cache.past(base)
            past = pinned.cat(cached) if cached is not None else pinned
            pos = torch.arange(lo, hi).float() - base
            step = {k: v[:, lo:hi] for k, v in acts.items()}
            out, kv = model(x[:, lo:hi], t[:, lo:hi], step, positions=pos, past=past, window=window,
                            return_kv=True)
            outs.append(out)
            cache.append(kv, range(lo, hi))
            cache.evict(window - 1)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-5)


def test_action_grouping_to_the_latent_rate():
    move = torch.arange(8)[None]  # transitions 0..7 of a 9-frame clip
    g = group_actions({"move": move, "yaw": torch.ones(1, 8, 2)}, 4)["move"]
    assert g.tolist() == [[[-1, -1, -1, -1], [0, 1, 2, 3], [4, 5, 6, 7]]]
    yaw = group_actions({"yaw": torch.ones(1, 8, 2)}, 4)["yaw"]
    assert yaw.shape == (1, 3, 4, 2) and torch.isnan(yaw[0, 0]).all() and (yaw[0, 1:] == 1).all()
    assert latent_poses(torch.arange(9.0)[None, :, None].expand(1, 9, 5), 4)[0, :, 0].tolist() == [0, 4, 8]
    # one id per latent frame = the same id for its four video frames
    model = WanDiT(world_cfg()).eval()
    randomize(model, 6)
    x, t, _ = inputs(f=2)
    per_latent = {"move": torch.tensor([[1, 2], [3, 4]]), "view": torch.zeros(2, 2, dtype=torch.long),
                  "interact": torch.ones(2, 2, dtype=torch.long)}
    per_frame = {k: v[:, :, None].expand(2, 2, 4) for k, v in per_latent.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, per_latent), model(x, t, per_frame), atol=0, rtol=0)


def test_the_rollout_engine_runs_the_wan_backbone():
    """The engine's cached rollout equals its full recompute with the Wan backbone in place of the DiT."""
    import numpy as np

    from infworld.memory.registry import make_memory
    from infworld.models.tokenizers import PixelTokenizer
    from infworld.models.worldnet import WorldNet
    from infworld.world import RolloutConfig, WorldModel

    torch.manual_seed(0)
    dit = WanDiT(tiny_cfg(in_channels=48, latent_size=(4, 4), max_frames=4))
    randomize(dit, 7, std=0.2)
    net = WorldNet(dit, PixelTokenizer(4, (16, 16)), (16, 16), {})
    frames = np.random.default_rng(0).integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8)
    acts = {"move": np.array([[1, 2, 3, 4, 5]]), "view": np.zeros((1, 5), int),
            "interact": np.zeros((1, 5), int)}
    outs = []
    for use_cache in (True, False):
        cfg = RolloutConfig(chunk=2, use_cache=use_cache)
        cfg.sampler.steps = 2
        world = WorldModel(net, make_memory("window", budget=3), cfg)
        world.reset(frames)
        outs.append(np.concatenate([world.step({k: v[:, i:i + 2] for k, v in acts.items()})
                                    for i in (0, 2)], axis=1))
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1
