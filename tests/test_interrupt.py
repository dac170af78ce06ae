"""Interruption that loses nothing: Ctrl-C or SIGTERM with judge calls in flight.

The judge is the loopback server; its first K calls are answered, every later one hangs for 40 s (longer
than nothing but the call timeout). The run is started in a session of its own and the signal goes to the
controller's pid only, as a CI runner or `kill` sends it. It must return long before the hung calls could,
with pytest's summary and a partial report; no process of the run may outlive it, nor the server see
another request; the cache must hold exactly the K results that arrived, and a rerun must send only the
calls that were missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_pytest_subprocess
from pytest_mtbench.backends.base import BackendOptions, Completion, SamplingParams
from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply
from pytest_mtbench.testing.soak import python_sigint, session_processes, signal_disposition

pytest_plugins = ["pytester"]

ANSWERED = 16  # judge calls answered before every later one hangs
PREFLIGHT = 1  # the judge's one-token preflight call (which weights it serves), answered first
HANG = 40.0  # seconds a hung call would take (the call timeout is longer still)
SELECTION = ("-k", "writing or roleplay or math")  # 30 questions, 60 judge calls
JUDGE_CALLS = 60


def varied_score(body: dict[str, Any]) -> int:
    """A rating in 1..10 that depends on the judge prompt, so equal reports mean equal judgments."""
    return 1 + hashlib.sha256(body["messages"][-1]["content"].encode()).digest()[0] % 10


def outcome(question: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a question's record says about its turns: answer, judge prompts and replies, score."""
    return [
        (t["answer"], [(j["prompt"], j["text"], j["score"]) for j in t["judgments"]], t["score"])
        for t in question["turns"]
    ]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the backend alone ---------------------------------------------------------------------------------


def test_an_interrupted_batch_returns_at_once_and_hands_over_every_result_that_arrived() -> None:
    pytest.importorskip("openai")
    from pytest_mtbench.backends.openai_api import ABORT_GRACE, OpenAIBackend

    release = threading.Event()

    def reply(body: dict[str, Any]) -> str:
        if int(body["messages"][-1]["content"][1:]) >= 3:
            release.wait(HANG)  # q3..q7 hang
        return judge_like_reply(7)

    seen: list[int] = []
    raised_at: list[float] = []

    def on_result(index: int, completion: Completion) -> None:
        seen.append(index)
        if len(seen) == 1:  # the first store is interrupted, once the others are all in flight
            wait_until(lambda: server.in_flight == 5, 10, "the hung calls")
            time.sleep(0.2)  # q0..q2 have all arrived by now, not all handed over
            raised_at.append(time.monotonic())
            raise KeyboardInterrupt

    with FakeOpenAIServer(reply=reply, lifetime=60) as server:
        options = BackendOptions(base_url=server.base_url, timeout=HANG + 10, concurrency=8)
        backend = OpenAIBackend("fake-judge", options, environ={})
        try:
            with pytest.raises(KeyboardInterrupt):
                backend.chat(
                    [[{"role": "user", "content": f"q{i}"}] for i in range(8)],
                    SamplingParams(0.0, 16),
                    on_result,
                )
            returned = time.monotonic() - raised_at[0]
            started = time.monotonic()
            backend.close()
            closed = time.monotonic() - started
        finally:
            release.set()
            backend.close()
    assert returned < ABORT_GRACE + 2.0 and closed < 2.0, (returned, closed)
    # Every result that had arrived is handed over after the interruption, the interrupted one again.
    assert sorted(seen[1:]) == [0, 1, 2] and seen[0] in seen[1:]
    assert not [t for t in threading.enumerate() if t.name.startswith("mtbench-openai")]


# -- a whole run, signalled -----------------------------------------------------------------------------


@pytest.fixture
def judge() -> Iterator[FakeOpenAIServer]:
    faults = [None] * (PREFLIGHT + ANSWERED) + [("hang", HANG)] * 200
    with FakeOpenAIServer(scores=varied_score, faults=faults, lifetime=300) as server:
        yield server


def run_args(
    server: FakeOpenAIServer, shared_data: Path, tmp_path: Path, report: str, workers: str
) -> list[str]:
    return [
        "--mtbench-model=fake/echo",
        "--mtbench-judge=openai/fake-judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'cache'}",
        f"--mtbench-timeout={HANG + 20:g}",
        f"--mtbench-report={tmp_path / report}",
        *SELECTION,
        "-n",
        workers,
    ]


@pytest.mark.slow  # a real process, stopped by a signal half way
@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_with_calls_in_flight_stops_everything_and_loses_nothing(
    signum: int, workers: str, judge: FakeOpenAIServer, shared_data: Path, tmp_path: Path
) -> None:
    with python_sigint():  # started as from a terminal, even when this test run's SIGINT is ignored
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
            + run_args(judge, shared_data, tmp_path, "partial.json", workers),
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # the signal reaches the controller only, never its workers directly
        )
    try:
        # Every call not answered is hung: in-process 32 (the concurrency); under -n 2 each worker sends
        # its category's 20 at once, so 40 minus the answered ones.
        hung = 32 if workers == "0" else 40 - ANSWERED
        wait_until(
            lambda: judge.in_flight == hung and judge.request_count == PREFLIGHT + ANSWERED + hung,
            120,
            f"{hung} hung calls in flight",
        )
        time.sleep(0.3)
        workers_seen = [pid for pid in session_processes(proc.pid) if pid != proc.pid]
        assert len(workers_seen) == int(workers)
        # A run started with the signal ignored (inherited) leaves it so, by design.
        disposition = signal_disposition(proc.pid, signum)
        assert disposition == "caught", f"the run's {signal.Signals(signum).name} is {disposition}"
        sent = time.monotonic()
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=HANG)  # an orphan holding the pipes would block this
        returned = time.monotonic() - sent
        requests_at_exit = judge.request_count
        wait_until(lambda: not session_processes(proc.pid), 5, "the workers to be gone")
        time.sleep(1.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    print(f"{signal.Signals(signum).name} -n {workers}: returned after {returned:.2f}s")
    assert returned < HANG / 2, f"took {returned:.1f}s: it waited for the hung calls"
    assert proc.returncode == 2, stdout[-2000:] + stderr[-2000:]
    assert "KeyboardInterrupt" in stdout and "Traceback" not in stdout + stderr
    assert judge.request_count == requests_at_exit, "something kept calling the judge after the run ended"

    # Exactly the results that arrived are stored; the partial report holds every question they complete.
    assert len(list((tmp_path / "cache" / "judgment").rglob("*.json"))) == ANSWERED
    assert not list((tmp_path / "cache").rglob("*.tmp")), "a half-written cache entry was left behind"
    answered = {body["messages"][-1]["content"] for body in judge.requests[PREFLIGHT : PREFLIGHT + ANSWERED]}

    # The rerun sends only the missing calls, and its report agrees with the partial one.
    judge.set_faults([])
    before = judge.request_count
    rerun = run_pytest_subprocess(tmp_path, *run_args(judge, shared_data, tmp_path, "full.json", workers))
    assert rerun.returncode == 0, rerun.stdout[-2000:]
    assert "30 passed" in rerun.stdout
    assert judge.request_count - before == PREFLIGHT + JUDGE_CALLS - ANSWERED
    full = {q["question_id"]: q for q in json.loads((tmp_path / "full.json").read_text())["questions"]}
    complete = {
        qid
        for qid, q in full.items()
        if all(t["judgments"][0]["prompt"]["user"] in answered for t in q["turns"])
    }
    assert complete, "the answered calls complete no question: raise ANSWERED"
    partial = json.loads((tmp_path / "partial.json").read_text())
    assert {q["question_id"] for q in partial["questions"]} == complete
    assert f"report: {tmp_path / 'partial.json'}" in stdout and "MT-Bench: fake/echo" in stdout
    for question in partial["questions"]:
        assert outcome(question) == outcome(full[question["question_id"]])
    assert len({t["score"] for q in partial["questions"] for t in q["turns"]}) > 1


# -- the handlers are the run's only --------------------------------------------------------------------


def test_sigterm_handler_only_while_the_plugin_is_active_and_restored_after(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    pytester.makeconftest(
        "import signal\n"
        "def pytest_sessionstart(session):\n"
        "    handler = signal.getsignal(signal.SIGTERM)\n"
        "    with open('sigterm.txt', 'a') as out:\n"
        "        out.write(getattr(handler, '__qualname__', 'default') + '\\n')\n"
    )
    pytester.makepyfile("def test_ok():\n    pass\n")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    plain = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    plain.assert_outcomes(passed=1)
    active = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "-k",
        "81 or test_ok",
    )
    active.assert_outcomes(passed=2)  # test_ok and question 81
    assert (pytester.path / "sigterm.txt").read_text().split() == [
        "default",
        "InterruptHandler.handle",
    ]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
