"""The README's CLI quick start, run end to end on tiny data so the front door cannot rot.

tests/test_readme.py checks that every ``infworld ...`` line of the README parses; this test runs a
representative chain of them for real, in a scratch folder: collect ViZDoom episodes, validate,
inspect and relabel them, train a recipe, export it, roll it out and benchmark it. Each command is
taken from the README and only its sizes are made tiny (episodes, steps, frames, training steps)
and the big recipe swapped for ``tiny-test-world``; a flag the README stops using makes the test fail
here rather than silently test something else.
"""

from __future__ import annotations

import json
import shlex

import pytest
from test_readme import _readme_commands

from infworld.cli import main

pytest.importorskip("vizdoom")


def readme_argv(prefix: str) -> list[str]:
    """The argv (without ``infworld``) of the first README command starting with ``prefix``."""
    for cmd in _readme_commands():
        if cmd.startswith(prefix):
            return shlex.split(cmd)[1:]
    raise AssertionError(f"the README has no command starting with {prefix!r}")


def swap(argv: list[str], **values: str) -> list[str]:
    """Replace the value of each ``--flag`` (underscores for dashes) that the command already has."""
    out = list(argv)
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        assert flag in out, f"the README command {' '.join(argv)!r} no longer has {flag}"
        out[out.index(flag) + 1] = value
    return out


def run(argv: list[str]) -> None:
    assert main(argv) == 0, f"infworld {' '.join(argv)} failed"


def test_readme_quickstart_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the README's relative paths (data/, runs/, out/) land here
    # 1. record episodes (the README's first collect line, 2 tiny episodes in one process)
    run(swap(readme_argv("infworld collect --env vizdoom --scenario my_way_home --policy revisit"),
             episodes="2", steps="20", size="64", workers="1"))
    # 2. inspect, check, relabel
    run(readme_argv("infworld data validate"))
    capsys.readouterr()
    run([a for a in readme_argv("infworld data info") if a != "[--json]"] + ["--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2
    run(readme_argv("infworld data label"))
    assert (tmp_path / "data" / "doom-relabeled" / "meta.json").exists()
    # 3. train (the world recipe swapped for the tiny one, on the data just collected) and export
    train = swap(readme_argv("infworld train --recipe doom-tiny-world"), recipe="tiny-test-world")
    run(train + ["--set", "data.root=data/doom", "train.steps=3", "data.clip_len=4", "--no-progress"])
    export = readme_argv("infworld export runs/doom-tiny-world")
    export = [a.replace("doom-tiny-world", "tiny-test-world") for a in export]
    run(export)
    model = tmp_path / "checkpoints" / "tiny-test-world"
    assert (model / "config.json").exists() and (model / "model.safetensors").exists()
    # 4. generate: a few frames from a real episode's context
    run(swap(readme_argv("infworld rollout --model doom-tiny-world"), model=str(model), context="2",
             frames="4"))
    assert (tmp_path / "out" / "rollout" / "rollout.json").exists()
    # 5. benchmark on the collected episodes (the README's bring-your-own-data line), one protocol
    bench = swap(readme_argv("infworld bench --model doom-tiny-world --data"), model=str(model),
                 data="data/doom")
    run(bench + ["--memory", "window", "--protocols", "replay", "--max-episodes", "1", "--max-frames", "8",
                 "--context", "2", "--no-progress"])
    assert (tmp_path / "out" / "bench-mine" / "results.json").exists()
    # 6. play headless: a short scripted walk from starting frames cut from the collected episodes
    run(["play", "--make-starts", "data/doom", "--model", str(model), "--count", "1", "--context", "2"])
    run(swap(readme_argv("infworld play --headless"), frames="6") + ["--model", str(model)])
    assert (tmp_path / "out" / "walk.mp4").stat().st_size > 0
