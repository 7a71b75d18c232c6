"""The README's commands must not rot: every `infworld ...` line in it parses with the real CLI, and
the two set-up commands it gives exist as Makefile targets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from infworld.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    cmds = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("infworld "):
            cmds.append(line)
    return cmds


def test_readme_has_commands():
    assert len(_readme_commands()) >= 5


@pytest.mark.parametrize("cmd", _readme_commands())
def test_readme_command_parses(cmd):
    # Optional parts written as [--flag X] in the README are dropped before parsing.
    cmd = re.sub(r"\[[^\]]*\]", "", cmd)
    argv = shlex.split(cmd)[1:]
    args = build_parser().parse_args(argv)
    assert getattr(args, "func", None) is not None, cmd


def test_readme_setup_targets_exist():
    text = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", text, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README uses `make {target}`"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
