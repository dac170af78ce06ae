"""A small soak under -n 2: 300 judge calls, concurrency 32, against a judge that fails at random.

The same run and checks as benchmarks/bench_soak.py (pytest_mtbench/testing/soak.py), at a size a test
can afford: every call ends scored, unscored or failed and the counts add up to the calls planned; the
server saw exactly one retry per injected fault; after the plugin closed its backends no process of the
run holds a socket or a call thread, and the server's process is back to what it had before.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_mtbench.testing.soak import run_soak

pytest.importorskip("openai")
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.slow,
]


def test_soak_accounts_for_every_call_and_leaves_nothing_behind(shared_data: Path, tmp_path: Path) -> None:
    figures = run_soak(shared_data, questions=150, workers=2, timeout=4.0, hang=8.0, seed=3, workdir=tmp_path)
    assert figures.problems() == [], figures.output[-3000:]
    assert figures.planned == 300 and figures.failed == 0
    assert figures.scored + figures.unscored == 300 and figures.unscored > 0  # some prompts get no rating
    assert set(figures.faults) == {"500", "hang", "null-content"}  # each kind of fault happened
    assert figures.retries == sum(figures.faults.values()) > 0
    assert figures.returncode == 1  # the unscored turns fail their questions
    assert set(figures.processes) == {"controller", "gw0", "gw1"}
    for worker in ("gw0", "gw1"):  # the call pool was used, then went away
        assert figures.peak_threads[worker] > figures.processes[worker]["end"]["os_threads"]
