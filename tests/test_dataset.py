"""ClipDataset: shapes, splits, determinism, exact resume, rank/worker disjointness, revisit-dense clips."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from infworld.data.dataset import ClipDataConfig, ClipDataset, combine_actions, load_clip
from infworld.data.episode import DatasetMeta, Episode, episode_path, read_episode, write_episode, write_meta
from infworld.data.revisits import find_revisits
from infworld.errors import ConfigError, DataError

SIZE = (8, 10)


def line_pose(t_len: int) -> np.ndarray:
    pose = np.zeros((t_len, 5), np.float32)
    pose[:, 0] = np.arange(t_len) * 30.0  # straight ahead, never back
    return pose


def loop_pose(t_len: int, period: int = 12, straight: int = 30) -> np.ndarray:
    """A straight walk for ``straight`` frames, then laps of ``period`` frames (facing +x throughout):
    from frame straight + period on, frame t is exactly where frame t - period was."""
    t = np.arange(t_len)
    pose = np.zeros((t_len, 5), np.float32)
    pose[:, 0] = np.where(t < straight, 10_000 + 30.0 * t, (t % period) * 30.0)
    return pose


def make_dataset(root: Path, lengths=(40, 50, 30, 45), pose_fn=line_pose, pose: bool = True,
                 depth: bool = False) -> Path:
    meta = DatasetMeta(env="vizdoom", size=SIZE, interact_vocab=["none", "use", "fire"], has_pose=pose,
                       has_depth=depth)
    write_meta(root, meta)
    for i, t in enumerate(lengths):
        rng = np.random.default_rng(i)
        ep = Episode(
            frames=rng.integers(0, 255, (t, *SIZE, 3), dtype=np.uint8),
            move=rng.integers(0, 10, t - 1), view=rng.integers(0, 10, t - 1),
            interact=rng.integers(0, 3, t - 1),
            pose=pose_fn(t) if pose else None,
            depth=rng.integers(0, 255, (t, *SIZE), dtype=np.uint8) if depth else None,
        )
        write_episode(episode_path(root, i), ep, meta=meta)
    return root


@pytest.fixture
def ds_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


def take(ds: ClipDataset, n: int) -> list[dict]:
    return list(itertools.islice(iter(ds), n))


def test_clip_shapes_and_content(ds_root):
    ds = ClipDataset(ds_root, clip_len=6, split="train", val_episodes=1)
    assert ds.episodes == [0, 1, 2] and ds.num_clips == (40 - 5) + (50 - 5) + (30 - 5)
    for clip in take(ds, 5):
        assert clip["frames"].shape == (6, 3, *SIZE) and clip["frames"].dtype == torch.uint8
        for key in ("move", "view", "interact"):
            assert clip[key].shape == (5,) and clip[key].dtype == torch.int64
        assert clip["pose"].shape == (6, 5) and clip["pose"].dtype == torch.float32
        assert clip["has_pose"].item() is True
        ep = read_episode(episode_path(ds_root, clip["episode"]))
        s = clip["start"]
        assert np.array_equal(clip["frames"].permute(0, 2, 3, 1).numpy(), ep.frames[s:s + 6])
        assert np.array_equal(clip["move"].numpy(), ep.move[s:s + 5])  # action i: clip frame i -> i + 1
        assert np.array_equal(clip["interact"].numpy(), ep.interact[s:s + 5])
        assert np.array_equal(clip["pose"].numpy(), ep.pose[s:s + 6])
        same = load_clip(ds_root, clip["episode"], s, 6)
        assert same.keys() == clip.keys()
        assert all(torch.equal(v, clip[k]) if torch.is_tensor(v) else v == clip[k] for k, v in same.items())


def test_splits_and_errors(ds_root):
    assert ClipDataset(ds_root, 4, split="val", val_episodes=1).episodes == [3]
    assert ClipDataset(ds_root, 4, split="all").episodes == [0, 1, 2, 3]
    assert ClipDataset(ds_root, 4, split="train", val_episodes=0).episodes == [0, 1, 2, 3]
    with pytest.raises(DataError, match="split 'val' is empty"):
        ClipDataset(ds_root, 4, split="val", val_episodes=0)
    with pytest.raises(DataError, match="split 'train' is empty"):
        ClipDataset(ds_root, 4, split="train", val_episodes=4)
    # episodes shorter than the clip are skipped; none long enough names clip_len and the longest
    assert ClipDataset(ds_root, 41, split="all").episodes == [1, 3]
    with pytest.raises(DataError, match=r"clip_len=60 .*ep_000001\.npz with 50 frames"):
        ClipDataset(ds_root, 60, split="all")
    with pytest.raises(ConfigError, match="split"):
        ClipDataset(ds_root, 4, split="test")
    with pytest.raises(ConfigError, match="clip_len"):
        ClipDataset(ds_root, 1)
    with pytest.raises(ConfigError, match="rank"):
        ClipDataset(ds_root, 4, rank=2, world_size=2)


def test_determinism_and_exact_resume(ds_root):
    a = [(c["episode"], c["start"]) for c in take(ClipDataset(ds_root, 5, seed=3), 30)]
    b = [(c["episode"], c["start"]) for c in take(ClipDataset(ds_root, 5, seed=3), 30)]
    assert a == b and len(set(a)) > 10
    assert a != [(c["episode"], c["start"]) for c in take(ClipDataset(ds_root, 5, seed=4), 30)]
    resumed = take(ClipDataset(ds_root, 5, seed=3, start_sample=12), 18)
    assert [(c["episode"], c["start"]) for c in resumed] == a[12:]
    full = take(ClipDataset(ds_root, 5, seed=3), 14)
    assert torch.equal(resumed[0]["frames"], full[12]["frames"])
    assert torch.equal(resumed[1]["move"], full[13]["move"])


def test_ranks_and_workers_are_disjoint(ds_root):
    r0 = ClipDataset(ds_root, 5, seed=1, rank=0, world_size=2)
    r1 = ClipDataset(ds_root, 5, seed=1, rank=1, world_size=2)
    assert [r0.locate(i) for i in range(20)] != [r1.locate(i) for i in range(20)]
    ds = ClipDataset(ds_root, 5, seed=1, start_sample=7, worker_block=3)
    shares = [list(itertools.islice(ds.worker_indices(w, 2), 9)) for w in range(2)]
    assert shares[0][:6] == [7, 8, 9, 13, 14, 15] and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == list(range(7, 25))


def test_dataloader_workers_keep_index_order(ds_root):
    """worker_block = batch size: two workers together yield samples 0, 1, 2, ... in order."""
    ds = ClipDataset(ds_root, 4, seed=2, worker_block=3)
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    got = []
    for batch in itertools.islice(loader, 4):
        assert batch["frames"].shape == (3, 4, 3, *SIZE)
        got += list(zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True))
    assert got == [ds.locate(i) for i in range(12)]


def test_stride_merges_actions(tmp_path):
    root = make_dataset(tmp_path / "ds", lengths=(40,))
    clip = take(ClipDataset(root, 5, split="all", stride=3), 1)[0]
    ep = read_episode(episode_path(root, 0))
    s = clip["start"]
    assert np.array_equal(clip["frames"].permute(0, 2, 3, 1).numpy(), ep.frames[s:s + 13:3])
    assert np.array_equal(clip["move"].numpy(), combine_actions(ep.move[s:s + 12], 3))
    ids = np.array([4, 4, 4, 4, 1, 4, 0, 0, 0])
    assert combine_actions(ids, 3).tolist() == [4, 9, 0]  # mixed run -> uncertain
    assert combine_actions(np.array([0, 2, 1, 0, 0, 0]), 3, None).tolist() == [2, 0]  # first interaction


def test_no_poses_and_depth(tmp_path):
    root = make_dataset(tmp_path / "ds", pose=False, depth=True)
    clip = take(ClipDataset(root, 4, load_depth=True), 1)[0]
    assert clip["has_pose"].item() is False and not clip["pose"].any()
    assert clip["depth"].shape == (4, 1, *SIZE) and clip["depth"].dtype == torch.uint8
    with pytest.raises(DataError, match="has_pose"):
        ClipDataset(root, 20, revisit_dense=True)
    with pytest.raises(DataError, match="has_depth"):
        ClipDataset(make_dataset(tmp_path / "nodepth"), 4, load_depth=True)


def test_revisit_dense_clips_contain_a_revisit(tmp_path):
    root = make_dataset(tmp_path / "ds", pose_fn=loop_pose, lengths=(60, 47, 60))
    ds = ClipDataset(root, 20, revisit_dense=True, min_revisit_gap=10, revisit_tail=4, val_episodes=0,
                     revisit_dist=1.0, seed=5)
    assert ds.num_clips < ClipDataset(root, 20, val_episodes=0).num_clips  # the filter does something
    for clip in take(ds, 25):
        pose = clip["pose"].numpy()
        mask, src = find_revisits(pose, min_gap=10, dist=1.0, angle_deg=30.0)
        assert mask[-4:].any(), (clip["episode"], clip["start"])  # a tail frame revisits a clip frame
    # exactly the qualifying starts of episode 0 are kept (checked clip by clip, the slow way)
    ep_pose = loop_pose(60)
    qualifies = [bool(find_revisits(ep_pose[j:j + 20], min_gap=10, dist=1.0)[0][-4:].any())
                 for j in range(41)]
    assert qualifies == [j >= 23 for j in range(41)]  # tail frame 42 revisits frame 30 from start 23 on
    assert ds._starts[0].tolist() == list(range(23, 41))
    with pytest.raises(DataError, match="no clip .* contains a revisit"):
        ClipDataset(make_dataset(tmp_path / "line"), 20, revisit_dense=True, min_revisit_gap=10)
    with pytest.raises(ConfigError, match="too short"):
        ClipDataset(root, 8, revisit_dense=True, min_revisit_gap=10)


def test_lru_cache_is_bounded(ds_root):
    ds = ClipDataset(ds_root, 4, split="all", cache_episodes=2)
    take(ds, 40)
    assert 1 <= len(ds._cache) <= 2


def test_load_clip_errors_and_from_config(ds_root):
    with pytest.raises(DataError, match="episode index 9 out of range"):
        load_clip(ds_root, 9, 0, 4)
    with pytest.raises(DataError, match="does not fit"):
        load_clip(ds_root, 2, 28, 4)
    ds = ClipDataset.from_config(ds_root, ClipDataConfig(clip_len=7, stride=2), split="val", seed=9)
    assert (ds.clip_len, ds.stride, ds.episodes, ds.span) == (7, 2, [3], 13)
