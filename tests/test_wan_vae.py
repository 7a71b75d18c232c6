"""The Wan VAE tokenizer: equal to diffusers' AutoencoderKLWan round trip, streams chunk by chunk,
loads from a local folder, and caches training latents at the latent frame rate. Tiny random VAE,
CPU, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infworld.errors import CheckpointError, ConfigError, DataError

diffusers = pytest.importorskip("diffusers")

from infworld.models.wan.vae import WanVAE  # noqa: E402  (needs diffusers)

MEAN, STD = [0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 2.0, 1.0]


def tiny_vae(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                      attn_scales=[], temperal_downsample=[False, True, True],
                                      latents_mean=MEAN, latents_std=STD).eval()


def video(b=2, t=9, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, size, size), generator=g, dtype=torch.uint8)


def test_round_trip_equals_diffusers_in_both_modes():
    ref = tiny_vae()
    x = video()
    xf = x.float() / 127.5 - 1.0
    mean, std = torch.tensor(MEAN).view(4, 1, 1), torch.tensor(STD).view(4, 1, 1)
    with torch.no_grad():
        mu = ref.encode(xf.transpose(1, 2)).latent_dist.mode()  # (B, C, F, h, w)
        expected = ref.decode(mu).sample.transpose(1, 2)
        tok = WanVAE(ref, temporal=True)
        z = tok.encode(x)
        assert tok.frames_per_latent == 4 and z.shape == (2, 3, 4, 2, 2) and tok.video_frames(3) == 9
        torch.testing.assert_close(z, (mu.transpose(1, 2) - mean) / std, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(tok.decode(z), expected, atol=1e-5, rtol=1e-5)
        # image mode: every frame alone, the contract of the other tokenizers
        img = WanVAE(ref, temporal=False)
        frames = x[:, 0]
        mu1 = ref.encode(xf[:, 0, :, None]).latent_dist.mode()
        z1 = img.encode(frames)
        assert img.frames_per_latent == 1 and z1.shape == (2, 4, 2, 2)
        torch.testing.assert_close(z1, (mu1[:, :, 0] - mean) / std, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(img.decode(z1), ref.decode(mu1).sample[:, :, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(img.encode(xf[:, 0]), z1)  # float [-1, 1] frames give the same latents


def test_streaming_equals_whole_video():
    tok = WanVAE(tiny_vae(), temporal=True)
    x = video(t=13, seed=1)
    with torch.no_grad():
        z = tok.encode_video(x)
        enc = tok.stream_encoder()
        parts = [enc.push(x[:, lo:hi]) for lo, hi in ((0, 3), (3, 4), (4, 11), (11, 13))]
        assert [p.shape[1] for p in parts] == [1, 0, 2, 1]  # frame 0 alone, then groups of 4
        torch.testing.assert_close(torch.cat(parts, 1), z, atol=1e-6, rtol=1e-5)
        dec = tok.stream_decoder()
        frames = torch.cat([dec.push(z[:, :1]), dec.push(z[:, 1:3]), dec.push(z[:, 3:])], 1)
        torch.testing.assert_close(frames, tok.decode_video(z), atol=1e-5, rtol=1e-5)


def test_loads_from_a_local_folder_and_rebuilds_from_its_config(tmp_path):
    ref = tiny_vae(seed=3)
    ref.save_pretrained(tmp_path / "pipe" / "vae")
    tok = WanVAE.from_pretrained(tmp_path / "pipe", temporal=True)  # a pipeline folder with vae/
    x = video(t=5, seed=2)
    with torch.no_grad():
        z = tok.encode(x)
        torch.testing.assert_close(z, WanVAE(ref, temporal=True).encode(x))
        rebuilt = WanVAE.from_config(tok.embed()["vae_config"], temporal=True)
        rebuilt.load_state_dict(tok.state_dict())
        torch.testing.assert_close(rebuilt.encode(x), z)
    # the world task's tokenizer spec: load, then rebuild from JSON alone (weights from the export)
    import json

    from infworld.models.wan.vae import build_wan_tokenizer, load_wan_tokenizer

    tok2, embed = load_wan_tokenizer(f"wan-vae:{tmp_path / 'pipe'}")
    again = build_wan_tokenizer(json.loads(json.dumps(embed)))
    again.load_state_dict(tok2.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x[:, 0]), tok2.encode(x[:, 0]))
    with pytest.raises(CheckpointError, match="does not exist"):
        WanVAE.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="Wan2.1_VAE.pth"):
        WanVAE.from_pretrained(tmp_path)


def test_bad_inputs_are_clear_errors():
    tok = WanVAE(tiny_vae(), temporal=True)
    with pytest.raises(DataError, match="1 \\+ 4 k frames"):
        tok.encode(video(t=8))
    with pytest.raises(DataError, match="multiples of 8"):
        tok.encode(torch.zeros(1, 3, 3, 12, 16, dtype=torch.uint8))
    # a backbone built for other latent channels refuses the VAE's latents, naming both shapes
    from infworld.models.action import ActionConfig
    from infworld.models.wan import WanConfig, WanDiT

    dit = WanDiT(WanConfig(in_channels=16, latent_size=(2, 2), dim=24, ffn_dim=32, depth=1, num_heads=2,
                           freq_dim=16, text_dim=8, max_frames=4, actions=ActionConfig(num_interact=2)))
    z = tok.encode(video(t=5))
    with pytest.raises(ConfigError, match=r"\(4, 2, 2\).*\(16, 2, 2\)"):
        dit(z, torch.zeros(z.shape[:2]), None)


def test_latent_store_encodes_each_episode_once(tmp_path):
    from synthetic import make_dataset

    from infworld.data.episode import list_episodes, read_episode
    from infworld.models.wan.latents import WanLatentStore, group_actions

    root = make_dataset(tmp_path / "data", episodes=2, length=11, size=16)
    tok = WanVAE(tiny_vae(), temporal=True)
    store = WanLatentStore(root, tok, chunk_frames=5)
    assert store.build() == 2 and store.build() == 0
    ep = read_episode(list_episodes(root)[1])
    z = store.episode(1)
    assert z.dtype == np.float16 and z.shape == (3, 4, 2, 2)  # 11 frames -> 1 + 2 latents (1 + 8 frames)
    with torch.no_grad():
        expected = tok.encode_video(torch.as_tensor(ep.frames[None, :9]).permute(0, 1, 4, 2, 3))[0]
    torch.testing.assert_close(torch.from_numpy(np.asarray(z, np.float32)), expected.half().float())
    clip = store.clip(1, 1, 2)
    assert clip["latents"].shape == (2, 4, 2, 2) and clip["pose"].shape == (2, 5)
    grouped = group_actions({"move": torch.as_tensor(ep.move)}, 4)["move"]
    assert clip["move"].tolist() == grouped[1:3].tolist() == [ep.move[0:4].tolist(), ep.move[4:8].tolist()]
    other = WanLatentStore(root, WanVAE(tiny_vae(), temporal=False))
    assert other.dir != store.dir and other.episode(0).shape == (11, 4, 2, 2)
    with pytest.raises(DataError, match="outside"):
        store.clip(0, 2, 2)
