"""Event-dense sampling: clips that end in an interaction with a recorded effect (data/events.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from infworld.data.dataset import ClipDataset
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.data.events import event_starts, event_transitions
from infworld.errors import ConfigError, DataError

SIZE = (8, 8)


def make_events_dataset(root, lengths=(60, 40, 50), events=((10, 45), (), (30,))):
    """Episodes whose inventory changes after the interactions at the listed transitions, and also
    without an interaction at t = 5 (a state change the agent did not cause: not an event)."""
    write_meta(root, DatasetMeta(env="crafter", size=SIZE, interact_vocab=["none", "do"], has_pose=False))
    for e, (t_len, evs) in enumerate(zip(lengths, events, strict=True)):
        rng = np.random.default_rng(e)
        interact = rng.integers(0, 2, t_len - 1)
        inv = np.zeros((t_len, 4), np.uint8)
        for t in evs:
            interact[t] = 1
            inv[t + 1:, 1] += 1
        interact[5] = 0
        inv[6:, 0] += 1  # health dropped: no interaction, so no event
        ep = Episode(frames=rng.integers(0, 255, (t_len, *SIZE, 3), dtype=np.uint8),
                     move=rng.integers(0, 10, t_len - 1), view=np.full(t_len - 1, 4), interact=interact,
                     extras={"inventory": inv})
        write_episode(episode_path(root, e), ep)
    return root


def test_event_starts_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    interact = rng.integers(0, 3, 99)
    state = np.cumsum(rng.random((100, 3)) < 0.05, axis=0)
    t_ev = event_transitions(interact, state)
    assert all(interact[t] != 0 and (state[t + 1] != state[t]).any() for t in t_ev)
    assert len(t_ev) == sum(interact[t] != 0 and (state[t + 1] != state[t]).any() for t in range(99))
    for clip_len, tail in ((16, 4), (10, 1), (20, 20)):
        brute = [j for j in range(100 - clip_len + 1)
                 if any(j + clip_len - tail <= t + 1 <= j + clip_len - 1 for t in t_ev)]
        assert event_starts(t_ev, 100, clip_len, tail).tolist() == brute


def test_event_share_draws_clips_that_end_in_events(tmp_path):
    root = make_events_dataset(tmp_path / "ds")
    dense = ClipDataset(root, 16, val_episodes=0, event_share=1.0, event_extra="inventory", seed=3)
    for clip in itertools.islice(iter(dense), 40):
        e, s = int(clip["episode"]), int(clip["start"])
        events = {0: (10, 45), 1: (), 2: (30,)}[e]
        assert any(s + 12 <= t + 1 <= s + 15 for t in events), (e, s)  # an event in the last 4 frames
    half = ClipDataset(root, 16, val_episodes=0, event_share=0.5, event_extra="inventory", seed=3)
    plain = ClipDataset(root, 16, val_episodes=0, seed=3)

    def share(ds):
        hits = 0
        for i in range(400):
            e, s = ds.locate(i)
            hits += any(s + 12 <= t + 1 <= s + 15 for t in {0: (10, 45), 1: (), 2: (30,)}[e])
        return hits / 400

    assert share(plain) < 0.25 and 0.5 < share(half) < 0.75  # 0.5 + 0.5 * the uniform rate
    assert half.locate(7) == ClipDataset(root, 16, val_episodes=0, event_share=0.5, event_extra="inventory",
                                         seed=3, start_sample=7).locate(7)  # still one stream per seed


def test_bad_event_settings(tmp_path):
    root = make_events_dataset(tmp_path / "ds")
    with pytest.raises(DataError, match="records no extra 'semantic'"):
        ClipDataset(root, 16, event_share=0.5, event_extra="semantic")
    with pytest.raises(ConfigError, match="needs event_extra"):
        ClipDataset(root, 16, event_share=0.5)
    with pytest.raises(ConfigError, match="event_share must be in"):
        ClipDataset(root, 16, event_share=1.5, event_extra="inventory")
    none = make_events_dataset(tmp_path / "none", events=((), (), ()))
    with pytest.raises(DataError, match="no clip of split 'train' ends in an event"):
        ClipDataset(none, 16, val_episodes=1, event_share=0.5, event_extra="inventory")
