"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine idle-spinning
    # OpenMP workers make them up to 10x slower; restore the setting afterwards.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def pytest_terminal_summary(terminalreporter):
    """Say loudly when the browser test did not run: a skipped play page is easy to miss among dots."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "test_play_browser" in str(getattr(r, "nodeid", "")) or "chromium" in str(r.longrepr)]
    if skipped:
        reason = skipped[0].longrepr[-1] if isinstance(skipped[0].longrepr, tuple) else skipped[0].longrepr
        terminalreporter.write_sep("!", "BROWSER TEST SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"the play page was not tested in a browser: {reason}",
                                    red=True, bold=True)
        terminalreporter.write_line("install Debian's chromium as .ci/run does: apt-get install -y chromium",
                                    red=True, bold=True)
