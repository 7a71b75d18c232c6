"""The Crafter world-state probe: its geometry matches crafter's renderer, it learns, exports, loads
and refuses bad input with errors that name the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("crafter")

from infworld.bench.crafter_grid import CrafterGrid, CrafterPainter, load_probe_data  # noqa: E402
from infworld.bench.crafter_probe import (  # noqa: E402
    CrafterProbe,
    ProbeConfig,
    ProbeTrainConfig,
    train_probe,
)
from infworld.bench.crafter_probe_io import load_probe, save_probe  # noqa: E402
from infworld.cli import main  # noqa: E402
from infworld.data.episode import (  # noqa: E402
    DatasetMeta,
    episode_path,
    list_episodes,
    read_episode,
    read_meta,
    write_episode,
    write_meta,
)
from infworld.envs.collect import CollectConfig, collect  # noqa: E402
from infworld.errors import CheckpointError, ConfigError, DataError  # noqa: E402

TINY = ProbeConfig(width=32, context=1, item_width=32)


def _collect(root, size: int = 64, episodes: int = 2, steps: int = 60, seed: int = 3):
    collect(CollectConfig(env="crafter", scenario="small", policy="explore", episodes=episodes, steps=steps,
                          out=str(root), seed=seed, size=(size, size), monsters=True), progress=False)
    return root


@pytest.fixture(scope="module")
def crafter_data(tmp_path_factory):
    return _collect(tmp_path_factory.mktemp("crafter") / "data")


@pytest.fixture(scope="module")
def trained(crafter_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "probe"
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = ProbeTrainConfig(steps=150, batch_size=32, heldout=1, model=TINY)
        meta = train_probe([crafter_data], out, cfg, progress=False)
    finally:
        torch.set_num_threads(prev)
    return out, meta


@pytest.mark.parametrize("size", [64, 50])  # 64: unit 7, no border; 50: unit 5, a 2-pixel border
def test_geometry_matches_rendered_frames(tmp_path, crafter_data, size):
    root = crafter_data if size == 64 else _collect(tmp_path / "data", size=size, episodes=1, steps=40)
    eps = load_probe_data(root)
    grid, names = eps[0].grid, eps[0].classes
    assert (grid.rows, grid.cols, grid.unit) == (7, 9, (size // 9, size // 9))
    assert grid.border == ((size - 9 * (size // 9)) // 2,) * 2
    painter = CrafterPainter(grid, names)
    rng = np.random.default_rng(0)
    day_frames = 0
    for ep in eps:
        assert (ep.cells[:, 3, 4] == names.index("player")).all()  # crafter centres the player
        for t in range(0, len(ep.frames), 4):
            frame, cells = ep.frames[t], ep.cells[t]
            # the item bar is crafter's ItemView of the recorded inventory, pixel for pixel
            top, left, bottom, right = grid.item_band
            assert np.array_equal(painter.item_band(ep.inventory_keys, ep.inventory[t]),
                                  frame[top:bottom, left:right])
            if ep.daylight[t] < 0.5:  # night noise is random: only day frames are deterministic
                continue
            day_frames += 1
            blocks: dict[int, set[bytes]] = {}
            todo = []
            for r in range(grid.rows):
                for c in range(grid.cols):
                    cls = int(cells[r, c])
                    if cls in painter.materials:
                        a, b, y, x = grid.cell_box(r, c)
                        blocks.setdefault(cls, set()).add(frame[a:y, b:x].tobytes())
                        todo.append((r, c, cls))
            # texture-identical cells have equal ids, and different materials look different
            assert all(len(v) == 1 for v in blocks.values())
            assert len({next(iter(v)) for v in blocks.values()}) == len(blocks)
            # each material cell is that material's texture, lit as crafter lights it (daylight is
            # stored as float32, hence a tolerance of one level)
            painted = frame.copy()
            painter.paint_cells(painted, todo, float(ep.daylight[t]), rng)
            assert np.abs(painted.astype(int) - frame).max() <= 1
    assert day_frames >= 5


def test_cell_of_and_world_of_are_inverse_and_match_the_semantic_map(crafter_data):
    meta = read_meta(crafter_data)
    grid = CrafterGrid.from_meta(meta)
    ep = read_episode(list_episodes(crafter_data)[0], meta=meta)
    sem = ep.extras["semantic"]
    for t in range(0, len(ep), 7):
        cells = grid.local_cells(sem[t], ep.pose[t])
        for r in range(grid.rows):
            for c in range(grid.cols):
                xy = grid.world_of((r, c), ep.pose[t])
                if xy is None:
                    assert cells[r, c] == grid.outside
                    continue
                assert grid.cell_of(xy, ep.pose[t]) == (r, c)
                assert sem[t, grid.area[1] - 1 - xy[1], xy[0]] == cells[r, c]
        px, py = (int(v) for v in ep.pose[t, :2])
        assert grid.cell_of((px, py), ep.pose[t]) == grid.offset
        assert grid.cell_of((px + grid.cols, py), ep.pose[t]) is None  # out of view
    # beyond the world edge: a player in the bottom-left corner sees `outside` below and to the left
    corner = grid.local_cells(np.full((grid.area[1], grid.area[0]), 2, np.uint8), np.array([0, 0, 0, 0, 0]))
    assert (corner[4:, :] == grid.outside).all() and (corner[:, :4] == grid.outside).all()
    assert (corner[:4, 4:] == 2).all()
    assert grid.world_of((4, 4), [0, 0]) is None and grid.world_of((3, 5), [0, 0]) == (1, 0)


def test_short_training_beats_the_majority_baseline(trained):
    _, meta = trained
    m = meta["metrics"]
    assert m["episodes"] == 1 and meta["train"]["episodes"] == 1
    assert m["cells"]["accuracy"] > m["cells"]["majority_baseline"] + 0.15, m["cells"]
    assert m["cells"]["per_class"]["player"]["accuracy"] > 0.7
    assert m["inventory"]["accuracy"] >= m["inventory"]["majority_baseline"]
    assert set(m["cells"]["per_class"]) <= set(meta["classes"])
    assert meta["classes"][meta["grid"]["outside"]] == "outside"


def test_export_load_round_trip_gives_identical_predictions(trained, crafter_data, tmp_path):
    out, meta = trained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "infworld-crafter-probe" and cfg["semantic_ids"]["player"] == 13
    assert cfg["grid"]["size"] == [64, 64] and cfg["metrics"] == meta["metrics"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    probe = load_probe(out)
    frames = read_episode(list_episodes(crafter_data)[-1]).frames[:40]
    first = probe.predict(frames, batch=16, probs=True)
    assert first["cells"].shape == (40, 7, 9) and first["inventory"].shape == (40, 16)
    assert first["cells"].dtype == np.int64 and first["confidence"].shape == (40, 7, 9)
    save_probe(probe, tmp_path / "again", probe.meta)
    again = load_probe(tmp_path / "again" / "config.json").predict(frames)
    assert np.array_equal(first["cells"], again["cells"])
    assert np.array_equal(first["inventory"], again["inventory"])
    # a fresh network, saved and loaded, predicts what it did in memory
    fresh = CrafterProbe(probe.grid, TINY, probe.classes, probe.inventory_keys)
    save_probe(fresh, tmp_path / "fresh", {"format": "infworld-crafter-probe", "version": 1,
                                           "grid": probe.grid.to_json(), "model": vars(TINY),
                                           "classes": probe.classes, "inventory_keys": probe.inventory_keys})
    reloaded = load_probe(tmp_path / "fresh")
    assert np.array_equal(fresh.predict(frames)["cells"], reloaded.predict(frames)["cells"])
    assert probe.predict(frames[:0])["cells"].shape == (0, 7, 9)


def test_bad_semantic_maps_name_the_field_and_shapes(crafter_data, tmp_path):
    grid = CrafterGrid.from_meta(read_meta(crafter_data))
    with pytest.raises(DataError, match=r"\[semantic\].*\(32, 32\).*\(5, 10, 10\)"):
        grid.local_cells(np.zeros((5, 10, 10), np.uint8), np.zeros((5, 5)))
    # an episode whose extra_semantic was cropped
    bad = tmp_path / "bad"
    meta = read_meta(crafter_data)
    write_meta(bad, meta)
    ep = read_episode(list_episodes(crafter_data)[0], meta=meta)
    ep.extras["semantic"] = ep.extras["semantic"][:, :20]
    write_episode(episode_path(bad, 0), ep)
    with pytest.raises(DataError, match=r"ep_000000.npz \[extra_semantic\]: expected shape \(61, 32, 32\).*"
                                        r"got \(61, 20, 32\)"):
        load_probe_data(bad)


def test_non_crafter_data_and_wrong_frames_are_refused(trained, tmp_path):
    doom = tmp_path / "doom"
    write_meta(doom, DatasetMeta(env="vizdoom", size=(64, 64)))
    with pytest.raises(DataError, match=r"meta.json \[env\]: .*'vizdoom'"):
        load_probe_data(doom)
    probe = load_probe(trained[0])
    with pytest.raises(DataError, match=r"\[frames\].*\(N, 64, 64, 3\) uint8.*\(2, 32, 32, 3\)"):
        probe.predict(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"\[frames\].*float32"):
        probe.predict(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ConfigError, match="paint"):
        train_probe([tmp_path], tmp_path / "x", ProbeTrainConfig(paint=2.0))


def test_broken_exports_raise_checkpoint_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no such probe folder"):
        load_probe(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"junk/config.json: cannot read"):
        load_probe(junk)
    (junk / "config.json").write_text(json.dumps({"format": "infworld-model"}))
    with pytest.raises(CheckpointError, match="not a crafter probe export"):
        load_probe(junk)
    cut = tmp_path / "cut"
    cut.mkdir()
    cfg = json.loads((trained[0] / "config.json").read_text())
    cfg.pop("files")
    (cut / "config.json").write_text(json.dumps(cfg))
    (cut / "model.safetensors").write_bytes((trained[0] / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut/model.safetensors: cannot load"):
        load_probe(cut)
    with pytest.raises(CheckpointError, match="not a crafter probe export; refusing"):
        save_probe(load_probe(trained[0]), junk, {})


def test_cli_trains_and_evaluates_end_to_end(crafter_data, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "train", "--data", str(crafter_data), "--out", str(out), "--steps", "20",
                 "--batch-size", "16", "--no-progress"]) == 0
    assert "majority baseline" in capsys.readouterr().out
    report = tmp_path / "eval.json"
    assert main(["probe", "eval", "--probe", str(out), "--data", str(crafter_data),
                 "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "player" in text and "inventory: accuracy" in text
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["frames"] == 122 and metrics["majority_from"] == "train"
    assert main(["probe", "eval", "--probe", str(tmp_path / "nope"), "--data", str(crafter_data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infworld probe: error:") and "no such probe folder" in err and err.count("\n") == 1
    assert main(["probe", "train", "--data", str(crafter_data), "--out", str(out), "--steps", "0"]) == 2
    assert "--steps: expected an integer >= 1" in capsys.readouterr().err
