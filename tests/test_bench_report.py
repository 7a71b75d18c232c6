"""The bench results contract (schema validation) and the report that renders it."""

from __future__ import annotations

import copy
import json

import pytest

from infworld.bench.elo import rate
from infworld.bench.report import write_report
from infworld.bench.schema import RESULTS_SCHEMA, SCHEMA_ID, validate_results
from infworld.errors import DataError


def make_results(variants=("none", "kv")) -> dict:
    """A complete synthetic results.json object (the numbers differ per variant so they can be found)."""
    out = {
        "schema": SCHEMA_ID,
        "created": "2025-01-02T03:04:05Z",
        "suite": {"name": "doom-v1", "version": 1, "trajectories": [
            {"name": "out_and_back_0", "kind": "out_and_back", "frames": 300, "seed": 1},
            {"name": "loop_0", "kind": "loop", "frames": 400, "seed": 2}]},
        "model": {"name": "doom-tiny-world", "path": "checkpoints/doom-tiny-world", "params": 3_200_000},
        "machine": {"platform": "Linux-x86_64", "processor": "x86_64", "cores": 2, "python": "3.11.7",
                    "torch": "2.13.0", "infworld": "0.1.0"},
        "settings": {"sampler": "euler", "steps": 4, "chunk": 1, "context": 16, "seed": 0},
        "variants": {},
    }
    for i, name in enumerate(variants):
        d = 1.5 * i
        out["variants"][name] = {
            "memory": {"name": name, "settings": {"budget": 64 * (i + 1)}},
            "replay": {"horizon": [1, 10, 100], "psnr": [25.0 + d, 21.0 + d, 17.25 + d],
                       "ssim": [0.9, 0.7, 0.5], "psnr_mean": 21.08 + d, "ssim_mean": 0.7},
            "revisit": {"events": 12, "psnr_gt": 14.37 + d, "ssim_gt": 0.41, "psnr_self": 16.5 + d,
                        "ssim_self": 0.52, "per_trajectory": {
                            "out_and_back_0": {"psnr_gt": 14.0 + d, "psnr_self": 16.0 + d, "events": 5},
                            "loop_0": {"psnr_gt": 14.6 + d, "psnr_self": 17.0 + d, "events": 7}}},
            "action": {"idm_accuracy": {"move": 0.61, "view": 0.55},
                       "idm_accuracy_real": {"move": 0.9, "view": 0.8},
                       "psnr_true_actions": 20.0, "psnr_random_actions": 18.0, "psnr_gap": 2.0},
            "distribution": {"horizons": [16, 64], "fd_ours": [3.25 + i, 7.5 + i], "kid_ours": [0.01, 0.02],
                             "fid_inception": None, "dynamic_degree_proxy": 1.2,
                             "motion_smoothness_proxy": 0.97},
            "speed": {"fps": 11.5 + i, "latency_ms_p50": 80.0, "latency_ms_p95": 95.0, "peak_rss_mb": 900.0,
                      "state_bytes": {"100": 1000 * (i + 1), "1000": 10000 * (i + 1), "10000": None}},
        }
    per_traj = {n: {t: v["revisit"]["per_trajectory"][t]["psnr_gt"] for t in ("out_and_back_0", "loop_0")}
                for n, v in out["variants"].items()}
    out["elo"] = rate({"memory": per_traj}, metrics={"memory": "revisit PSNR vs ground truth"}, n_boot=20)
    return out


def test_synthetic_results_validate_and_survive_json():
    res = make_results()
    validate_results(res)
    validate_results(json.loads(json.dumps(res)))
    assert RESULTS_SCHEMA["$id"] == SCHEMA_ID


@pytest.mark.parametrize("mutate, path", [
    (lambda r: r["variants"]["kv"]["replay"]["psnr"].__setitem__(1, "abc"), "variants.kv.replay.psnr[1]"),
    (lambda r: r["variants"]["kv"]["replay"]["psnr"].append(3.0), "variants.kv.replay.psnr"),
    (lambda r: r["variants"]["kv"]["speed"].__setitem__("fps", float("nan")), "variants.kv.speed.fps"),
    (lambda r: r["variants"]["none"]["revisit"].pop("psnr_self"), "variants.none.revisit.psnr_self"),
    (lambda r: r.__setitem__("schema", "infworld-bench/0"), "schema"),
    (lambda r: r.pop("machine"), "machine"),
    (lambda r: r["suite"]["trajectories"][0].__setitem__("kind", "spiral"), "suite.trajectories[0].kind"),
    (lambda r: r["variants"]["kv"]["speed"]["state_bytes"].__setitem__("many", 3),
     "variants.kv.speed.state_bytes.many"),
    (lambda r: r["settings"].__setitem__("steps", True), "settings.steps"),
    (lambda r: r.__setitem__("created", "yesterday"), "created"),
    (lambda r: r["elo"]["criteria"]["memory"]["ratings"].__setitem__(
        "ghost", r["elo"]["criteria"]["memory"]["ratings"]["kv"]), "elo.criteria.memory.ratings.ghost"),
])
def test_broken_results_are_rejected_naming_the_path(mutate, path):
    res = make_results()
    mutate(res)
    with pytest.raises(DataError) as err:
        validate_results(res, source="out/results.json")
    assert err.value.field == path
    assert "out/results.json" in str(err.value)


def test_nulls_and_missing_protocols_are_allowed():
    res = make_results()
    kv = res["variants"]["kv"]
    del kv["action"], kv["distribution"]
    kv["replay"]["psnr_mean"] = None
    del res["elo"]
    validate_results(res)


def test_report_renders_tables_plots_and_clips(tmp_path):
    res = make_results(("none", "kv", "full"))
    del res["variants"]["full"]["action"]  # a protocol that was not run
    clip = tmp_path / "clips" / "kv_loop_0.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"\x00")
    before = copy.deepcopy(res)
    md_path, html_path = write_report(res, tmp_path, clips={"kv": [clip]})
    assert res == before  # the report never edits the results
    md, page = md_path.read_text(), html_path.read_text()
    for text in (md, page):
        for name in ("none", "kv", "full", "doom-tiny-world", "doom-v1"):
            assert name in text
        assert "14.37" in text and "15.87" in text  # revisit PSNR gt of none and kv
        assert "21.08" in text  # replay PSNR mean
        assert "61.0%" in text  # IDM move accuracy
        assert "not run" in text  # full has no action protocol
        assert "metric, not people" in text
        assert "not FID" in text and "NOT VBench" in text
        assert "9.8 KiB" in text  # state bytes at 1000 frames of none
    elo = res["elo"]["criteria"]["memory"]["ratings"]
    assert f"{elo['full']['elo']:.0f}" in md
    assert "clips/kv_loop_0.mp4" in md and '<video controls loop muted src="clips/kv_loop_0.mp4"' in page
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["fd_horizon.png", "replay_fidelity.png", "state_bytes.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert page.count("data:image/png;base64,") == 3 and "](plots/replay_fidelity.png)" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_copes_with_a_bare_run(tmp_path):
    res = make_results(("none",))
    res["variants"]["none"] = {"memory": {"name": "none", "settings": {}}}
    del res["elo"]
    validate_results(res)
    md_path, html_path = write_report(res, tmp_path)
    md = md_path.read_text()
    assert md.count("not run") >= 5 + 1  # five protocol tables and the ratings
    assert "No data to plot" in md and html_path.is_file()
