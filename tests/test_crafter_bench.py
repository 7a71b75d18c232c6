"""``infworld bench --suite crafter-mini`` end to end: Crafter data -> a tiny world model -> the four
world-state protocols judged by the shipped probe; and models of the wrong game are refused."""

from __future__ import annotations

import json

import pytest

from infworld.cli import main

pytest.importorskip("crafter")


def _train(data, run, model, *overrides: str) -> None:
    assert main(["train", "--recipe", "tiny-test-world", "--set", f"data.root={data}", "train.steps=4",
                 "model.dit.patch_size=4", "--out", str(run), "--no-progress", *overrides]) == 0
    assert main(["export", str(run), "--out", str(model)]) == 0


@pytest.fixture(scope="module")
def crafter_model(tmp_path_factory):
    base = tmp_path_factory.mktemp("crafter-bench")
    data = base / "data"
    assert main(["collect", "--env", "crafter", "--policy", "craft", "--episodes", "2", "--steps", "40",
                 "--out", str(data), "--seed", "5", "--no-progress"]) == 0
    _train(data, base / "run", base / "model")
    return base


def test_crafter_bench_runs_every_protocol_and_resumes(crafter_model, tmp_path):
    out = tmp_path / "out"
    args = ["bench", "--model", str(crafter_model / "model"), "--suite", "crafter-mini", "--memory",
            "window,vrag",
            "--out", str(out), "--cache", str(crafter_model / "cache"), "--no-progress"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "infworld-crafter-bench/1"
    first, second = res["variants"]["window"], res["variants"]["vrag"]
    assert {"effects", "moves", "recall", "look"} <= set(first)
    assert set(second) >= {"recall"} and "effects" not in second  # memory-independent protocols once
    eff = first["effects"]
    assert eff["events"] > 0 and eff["judge_on_real"] >= 0.9  # the probe reads the real game right
    for v in (eff["shown"], eff["noop_shown"], first["moves"]["accuracy_moving"],
              first["look"]["confident_late"]):
        assert 0.0 <= v <= 1.0
    rec = second["recall"]
    assert rec["events"] == len(rec["rows"]) > 0 and rec["judge_on_real"] >= 0.9
    assert "World-state recall" in (out / "report.md").read_text()
    # A rerun keeps the finished parts (resumable) and gives the same results.
    before = (out / "parts" / "vrag.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "parts" / "vrag.json").stat().st_mtime_ns == before


def test_a_doom_model_is_refused_on_crafter(crafter_model, tmp_path, capsys):
    from synthetic import make_dataset

    data = make_dataset(tmp_path / "doom", episodes=2, size=64, vocab=("none", "use", "attack"))
    _train(data, tmp_path / "run", tmp_path / "model")
    args = ["bench", "--model", str(tmp_path / "model"), "--suite", "crafter-mini", "--memory", "window",
            "--out", str(tmp_path / "out"), "--cache", str(crafter_model / "cache"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "crafter's action space (13 interact ids" in err and "was trained on an action space (3" in err
    assert not (tmp_path / "out" / "results.json").exists()
    assert main(["bench", "--model", str(tmp_path / "model"), "--suite", "crafter-mini", "--protocols",
                 "replay", "--out", str(tmp_path / "o2"), "--cache", str(crafter_model / "cache")]) == 2
    assert "not crafter protocols" in capsys.readouterr().err
