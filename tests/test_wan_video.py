"""Video mode of the Wan VAE (docs/scale.md): the rollout engine generates latent frames of 4 video frames
each, actions grouped per latent frame, decoded chunk by chunk with the VAE's causal cache; the world task
trains on whole-episode latents cached on disk. Tiny random diffusers VAE + tiny Wan backbone, CPU, no
downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError, DataError, MemoryConfigError
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.wan import WanConfig, WanDiT
from infworld.models.worldnet import WorldNet
from infworld.video_frames import float_to_frames, frames_to_float
from infworld.world import RolloutConfig, WorldModel

diffusers = pytest.importorskip("diffusers")

from infworld.models.wan.vae import WanVAE  # noqa: E402  (needs diffusers)

R = 4  # video frames per latent frame
SIZE = 32  # frames 32x32 -> latents (4, 4, 4) -> 2x2 tokens
KEYS = ("move", "view", "interact")


def tiny_vae(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                      attn_scales=[], temperal_downsample=[False, True, True],
                                      latents_mean=[0.1, -0.2, 0.3, 0.0],
                                      latents_std=[1.5, 0.5, 2.0, 1.0]).eval()


def tiny_net(seed: int = 0, r: int = R) -> WorldNet:
    torch.manual_seed(seed)
    cfg = WanConfig(in_channels=4, latent_size=(4, 4), dim=24, ffn_dim=32, depth=2, num_heads=2, freq_dim=16,
                    text_dim=8, text_len=4, max_frames=6, frames_per_latent=r, action_adaln=True,
                    actions=ActionConfig(num_interact=2))
    dit = WanDiT(cfg)
    with torch.no_grad():  # random weights everywhere (adapters included), so every input matters
        for p in dit.parameters():
            p.normal_(0.0, 0.15)
    return WorldNet(dit, WanVAE(tiny_vae(), temporal=True), (SIZE, SIZE), {})


def engine(net: WorldNet, window: int = 3, chunk: int = 2, use_cache: bool = True, memory=None) -> WorldModel:
    return WorldModel(net, memory or make_memory("window", budget=window),
                      RolloutConfig(chunk=chunk, sampler=SamplerConfig(steps=2), use_cache=use_cache, seed=3))


def random_actions(rng, n: int, b: int = 2) -> dict[str, np.ndarray]:
    return {"move": rng.integers(0, 9, (b, n)), "view": rng.integers(0, 9, (b, n)),
            "interact": rng.integers(0, 2, (b, n))}


def frames(rng, n: int, b: int = 2) -> np.ndarray:
    return rng.integers(0, 256, (b, n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def net():
    return tiny_net()


def test_step_returns_r_frames_per_latent_frame(net):
    world = engine(net)
    rng = np.random.default_rng(0)
    assert world.frames_per_latent == R
    world.reset(frames(rng, 1 + R), random_actions(rng, R))  # 5 frames: frame 0 alone, then a group of 4
    assert world.index == 2
    out = world.step(random_actions(rng, 2 * R))
    assert out.shape == (2, 2 * R, SIZE, SIZE, 3) and out.dtype == np.uint8
    assert world.last_latents.shape == (2, 2, 4, 4, 4) and world.index == 4
    assert world.step(random_actions(rng, R)).shape == (2, R, SIZE, SIZE, 3) and world.index == 5
    world.observe(frames(rng, R), random_actions(rng, R))
    assert world.index == 6
    sizes = [world.state_nbytes()]
    for _ in range(4):
        world.step(random_actions(rng, 2 * R))
        sizes.append(world.state_nbytes())
    assert len(set(sizes)) == 1 and sizes[0] > world.cache.nbytes()  # flat, VAE stream caches included


def rollout(net, use_cache: bool, chunks: int = 4):
    rng = np.random.default_rng(1)
    world = engine(net, window=3, chunk=2, use_cache=use_cache)
    world.reset(frames(rng, 1 + 2 * R), random_actions(rng, 2 * R))
    out, latents = [], []
    for _ in range(chunks):
        out.append(world.step(random_actions(rng, 2 * R)))
        latents.append(world.last_latents)
    return np.concatenate(out, 1), torch.cat(latents, 1), world


def test_cached_rollout_equals_full_recompute(net):
    _, cached, world = rollout(net, True)
    _, full, _ = rollout(net, False)
    assert world.index == 3 + 4 * 2 > world.window and len(world.cache) == world.window - 1  # evicted
    assert torch.allclose(cached, full, atol=1e-4), float((cached - full).abs().max())


def test_chunked_decode_equals_whole_video_decode(net):
    """Chunk-by-chunk frames equal decoding the whole latent video at once; a commit=False step leaves
    the decoder untouched; observe after step continues the same video in the encoder."""
    world = engine(net, window=3, chunk=2)
    tok = net.tokenizer
    rng = np.random.default_rng(2)
    ctx = frames(rng, 1 + R)
    world.reset(ctx, random_actions(rng, R))
    steps, latents = [], [tok.encode_video(frames_to_float(ctx, (SIZE, SIZE)))]  # (B, 2, C, h, w)
    for n, commit in ((2, True), (1, False), (1, True), (2, True)):
        out = world.step(random_actions(rng, n * R), commit=commit)
        if commit:
            steps.append(out)
            latents.append(world.last_latents)
    whole = tok.decode_video(torch.cat(latents, 1))  # (B, 1 + 4 (F - 1), 3, H, W)
    expected = float_to_frames(whole[:, 1 + R :])
    got = np.concatenate(steps, 1)
    assert got.shape == expected.shape == (2, 5 * R, SIZE, SIZE, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float noise at uint8 rounding

    seen = []
    encode = world.video.encode
    world.video.encode = lambda x: seen.append(encode(x)) or seen[-1]
    real = frames(rng, R)
    world.observe(real, random_actions(rng, R))
    video = torch.cat([frames_to_float(ctx, (SIZE, SIZE)), whole[:, 1 + R :],  # what the rollout showed
                       frames_to_float(real, (SIZE, SIZE))], 1)
    torch.testing.assert_close(seen[0], tok.encode_video(video)[:, -1:], atol=1e-5, rtol=1e-4)


def test_actions_and_poses_are_grouped_per_latent_frame(net):
    """A spy on the backbone sees (B, n, 4) actions, oldest first; latent 0 after a reset has 4 nulls; the
    memory gets each latent frame's last pose."""
    world = engine(net)
    calls, writes = [], []
    hook = world.dit.register_forward_pre_hook(lambda m, args, kw: calls.append(args[2]), with_kwargs=True)
    write = world.memory.write
    world.memory.write = lambda lat, acts, poses, i: writes.append(poses) or write(lat, acts, poses, i)
    try:
        ids = np.arange(8)[None]  # (1, 8)
        poses = np.arange(13 * 5, dtype=np.float32).reshape(1, 13, 5)  # pose of frame f: row f
        first = {"move": ids[:, :4], "view": ids[:, :4] + 1, "interact": ids[:, :4] % 2}
        world.reset(frames(np.random.default_rng(0), 1 + R, b=1), first, poses=poses[:, :5])
        assert calls[-1]["move"].tolist() == [[[-1, -1, -1, -1], [0, 1, 2, 3]]]
        assert calls[-1]["view"].tolist() == [[[-1, -1, -1, -1], [1, 2, 3, 4]]]
        calls.clear()
        world.step({"move": ids, "view": 8 - ids, "interact": ids % 2}, poses=poses[:, 5:])
        for acts in calls:  # every velocity evaluation and the commit
            assert acts["move"].tolist() == [[[0, 1, 2, 3], [4, 5, 6, 7]]]
            assert acts["view"].tolist() == [[[8, 7, 6, 5], [4, 3, 2, 1]]]
            assert acts["interact"].shape == (1, 2, R)
        assert len(calls) == 2 + 1  # two sampler steps, one commit
    finally:
        hook.remove()
    assert writes[0][0, :, 0].tolist() == [0.0, 20.0]  # frames 0 and 4 (rows x 5)
    assert writes[1][0, :, 0].tolist() == [(5 + 3) * 5.0, (5 + 7) * 5.0]  # frames 8 and 12


def test_bad_inputs_name_the_expected_multiple(net):
    world = engine(net)
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"1 \+ 4 k context frames.*got 4"):
        world.reset(frames(rng, 4))
    world.reset(frames(rng, 1))  # one frame is 1 + 4 x 0
    with pytest.raises(DataError, match=r"multiple of 4 actions per step.*from 4 to 8.*got 6"):
        world.step(random_actions(rng, 6))
    with pytest.raises(DataError, match=r"multiple of 4 actions.*got 12"):
        world.step(random_actions(rng, 12))  # chunk 2 = 8 frames at most
    with pytest.raises(DataError, match=r"multiple of 4 frames.*got 3"):
        world.observe(frames(rng, 3), random_actions(rng, 3))
    with pytest.raises(MemoryConfigError, match="dead_reckon.*not supported with 4 frames per latent"):
        engine(net, memory=make_memory("kv", budget=2, local_window=3, poses="dead_reckon"))
    image_dit = WorldNet(tiny_net(r=1).dit, net.tokenizer, (SIZE, SIZE), {})
    with pytest.raises(ConfigError, match="tokenizer gives 4 video frames per latent frame.*groups 1"):
        engine(image_dit)


def test_video_mode_train_export_rollout(tmp_path):
    """tiny-test-wan with the Wan VAE in video mode and kv memory: each episode encoded once into the
    latent store, a few steps with evaluation, export, roll out from the export with kv and poses."""
    from test_rollout_cli import train_and_export

    from infworld.models.wan.latents import WanLatentStore
    from infworld.train.recipe import load_recipe
    from infworld.train.tasks.world import WorldTask

    data = make_dataset(tmp_path / "data", episodes=3, length=21)  # 21 frames -> 6 latent frames
    tiny_vae(seed=1).save_pretrained(tmp_path / "vae")
    # clips of 17 frames = 5 latent frames: 2 of memory history + a training window of 3
    sets = [f"model.tokenizer=wan-vae:{tmp_path / 'vae'}", "model.wan.frames_per_latent=4",
            "model.memory.strategies={window: 1.0, kv: 1.0}", "model.memory.history=2",
            "model.memory.settings={kv: {budget: 2, pool: 4, gate: 0.0}}", "data.clip_len=17",
            "model.chunk=2"]
    train_and_export("tiny-test-wan", data, tmp_path / "run", tmp_path / "model", *sets, "train.steps=3",
                     "train.eval_every=3", "train.log_every=1")
    cached = sorted((data / "latents").glob("wan-*/ep_*.npy"))
    assert len(cached) == 3 and all(np.load(p).shape == (6, 4, 4, 4) for p in cached)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert any(",val/next_frame_psnr," in r for r in rows)
    losses = [float(r.split(",")[-1]) for r in rows if ",train/loss," in r]
    assert len(losses) == 3 and all(np.isfinite(losses)) and any(",train/loss_kv," in r for r in rows)

    world = WorldModel.from_pretrained(str(tmp_path / "model"), memory="kv")
    assert world.frames_per_latent == R and world.dit.cfg.max_frames == 3 and world.config.chunk == 2
    from infworld.data.episode import episode_path, read_episode

    ep = read_episode(episode_path(data, 0))
    world.reset(ep.frames[None, :5], {k: getattr(ep, k)[None, :4] for k in KEYS}, poses=ep.pose[None, :5])
    for lo in (5, 13):  # video frames 5..12, then 13..20
        acts = {k: getattr(ep, k)[None, lo - 1 : lo + 7] for k in KEYS}  # transitions into frames lo..lo+7
        out = world.step(acts, poses=ep.pose[None, lo : lo + 8])
        assert out.shape == (1, 8, SIZE, SIZE, 3)
    assert world.index == 6

    recipe = load_recipe("tiny-test-wan", [f"data.root={data}", *sets])
    task = WorldTask(recipe.model, recipe)
    assert task.clip_latents == 5 and task.dit_config.max_frames == 3
    assert isinstance(task._store, WanLatentStore) and task._store.build() == 0  # all encoded, once
    batch = next(task.batches("train", 2, seed=0, rank=0, world_size=1))
    assert batch["move"].shape == (2, 5, R) and batch["pose"].shape == (2, 5, 5) and "frames" not in batch
    for bad, match in (("data.clip_len=12", r"data\.clip_len: 12 video frames.*1 \+ 4 k"),
                       ("model.tokenizer=pixels:4", r"frames_per_latent: 4.*'pixels:4'.*image mode")):
        recipe = load_recipe("tiny-test-wan", [f"data.root={data}", *sets, bad])
        with pytest.raises(ConfigError, match=match):
            WorldTask(recipe.model, recipe)


def test_latent_clips_resume_and_align_with_frames(tmp_path):
    """LatentClipDataset: a sample depends on (seed, rank, index) only; a clip's grouped actions, poses and
    (for evaluation) video frames line up with the episode."""
    from infworld.data.episode import list_episodes, read_episode
    from infworld.models.wan.clips import LatentClipDataset

    data = make_dataset(tmp_path / "data", episodes=3, length=21)  # 6 latent frames per episode
    stream = iter(LatentClipDataset(data, 3, R, "train", seed=5))
    first = [next(stream) for _ in range(6)]
    resumed = next(iter(LatentClipDataset(data, 3, R, "train", seed=5, start_sample=4)))
    assert (resumed["episode"], resumed["start"]) == (first[4]["episode"], first[4]["start"])
    assert {c["episode"] for c in first} <= {0, 1} and all(0 <= c["start"] <= 3 for c in first)
    val = LatentClipDataset(data, 3, R, "val", with_frames=True)
    for i in range(4):
        clip = val.sample(i)
        s, ep = clip["start"], read_episode(list_episodes(data)[clip["episode"]])
        a = R * s  # the clip's video frames start at the last frame of latent s - 1
        assert clip["episode"] == 2 and clip["move"].shape == (3, R) and "frames" not in first[0]
        assert np.array_equal(clip["frames"].permute(0, 2, 3, 1).numpy(), ep.frames[a : a + 1 + 2 * R])
        assert clip["move"][1:].flatten().tolist() == ep.move[a : a + 2 * R].tolist()  # into frames a+1..
        assert clip["pose"][:, 0].tolist() == ep.pose[R * np.arange(s, s + 3), 0].tolist()  # last frames
    with pytest.raises(DataError, match="long enough for 7 latent frames"):
        LatentClipDataset(data, 7, R, "train")
