"""A run started in the background (SIGINT ignored, as a shell script's `pytest ... &` or `nohup` leaves
it) still stops every xdist worker on SIGTERM, within seconds, with a partial report that counts the
calls that were made and a summary that does not say "no tests ran" when questions finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mtbench.testing.judge_server import FakeOpenAIServer
from pytest_mtbench.testing.soak import session_processes, signal_disposition

pytest.importorskip("openai")
pytestmark = pytest.mark.slow  # real processes stopped by a signal

ANSWERED = 24  # judge calls answered (after the preflight's one) before every later one hangs
HANG = 40.0  # seconds a hung call would take


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start children as a shell without job control starts a background job: SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_run(tmp_path: Path, shared_data: Path, judge: FakeOpenAIServer, *args: str) -> subprocess.Popen:
    """A plugin run in a session of its own (so the whole of it can be killed), its judge at `judge`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={judge.base_url}",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / 'cache'}",
            f"--mtbench-report={tmp_path / 'partial.json'}",
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_sigterm_stops_every_worker_of_a_background_run_and_counts_what_was_done(
    tmp_path: Path, shared_data: Path
) -> None:
    faults = [None] * (1 + ANSWERED) + [("hang", HANG)] * 200
    with FakeOpenAIServer(faults=faults, lifetime=300) as judge:
        with _sigint_ignored():
            proc = _start_run(tmp_path, shared_data, judge, "-k", "writing or roleplay", "-n", "2")
        try:
            # Each worker sends its category's 20 judge calls at once: 40, of which ANSWERED come back.
            _wait_until(lambda: judge.in_flight == 40 - ANSWERED, 120, "the hung calls")
            workers = [pid for pid in session_processes(proc.pid) if pid != proc.pid]
            assert len(workers) == 2
            assert {signal_disposition(pid, signal.SIGINT) for pid in [proc.pid, *workers]} == {"ignored"}
            sent = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=HANG)
            returned = time.monotonic() - sent
            _wait_until(lambda: not session_processes(proc.pid), 5, "every process of the run to be gone")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    print(f"SIGTERM, SIGINT ignored, -n 2: returned after {returned:.2f}s")
    assert returned < HANG / 2, f"took {returned:.1f}s: a worker went on waiting for its hung calls"
    assert proc.returncode == 2, stdout[-2000:] + stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    partial = json.loads((tmp_path / "partial.json").read_text())
    finished = partial["questions"]
    assert finished, "the answered calls finish no question: raise ANSWERED"
    # The finished questions' calls were made by this run: counted as calls, not as cache hits.
    judged = [j for q in finished for t in q["turns"] for j in t["judgments"]]
    assert judged and not any(j["call"]["cached"] for j in judged)
    assert partial["run"]["phases"]["judging"]["calls"] == len(judged)
    assert partial["run"]["phases"]["judging"]["cached"] == 0
    # Questions a worker finished but could not report before it stopped are counted too: how many a
    # worker reported first depends on which calls the server answered (test below pins that case).
    passed, unreported = _summary_counts(stdout)
    assert passed + unreported == len(finished), stdout[-600:]


def _summary_counts(stdout: str) -> tuple[int, int]:
    """(passed, finished before the interrupt) from pytest's last line; "no tests ran" fails."""
    last = stdout.splitlines()[-1]
    assert "no tests ran" not in stdout and " in " in last, stdout[-3000:]
    counts = []
    for word in ("passed", "finished before the interrupt"):
        match = re.search(rf"(\d+) {word}\b", last)
        counts.append(int(match.group(1)) if match else 0)
    return counts[0], counts[1]


def test_a_question_finished_in_an_unfinished_batch_counts_in_the_summary(
    tmp_path: Path, shared_data: Path
) -> None:
    """One process, one category (one batch): all its judge calls but two are answered, so at least 8 of
    its 10 questions finish, yet the batch never reports. The summary counts them, never "no tests ran"."""
    hung = 2
    faults = [None] * (1 + 20 - hung) + [("hang", HANG)] * 50
    with FakeOpenAIServer(faults=faults, lifetime=300) as judge:
        proc = _start_run(tmp_path, shared_data, judge, "-p", "no:xdist", "-k", "writing")
        try:
            _wait_until(lambda: judge.in_flight == hung, 120, "the hung calls")
            os.kill(proc.pid, signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=HANG)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 2, stdout[-2000:] + stderr[-2000:]
    finished = json.loads((tmp_path / "partial.json").read_text())["questions"]
    assert 10 - hung <= len(finished) < 10
    assert _summary_counts(stdout) == (0, len(finished)), stdout[-600:]
