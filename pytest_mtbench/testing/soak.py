"""A bounded soak: many judge calls through a whole plugin run against a faulty loopback judge.

`run_soak` writes a question file of `questions` two-turn questions (categories that need no reference
answers), starts the loopback server with random faults (by default 5% HTTP 500, 2% hangs longer than the
call timeout, 1% replies with null content; seeded), runs `pytest --mtbench-model=fake/echo
--mtbench-judge=openai/...` as a user does (under `-n workers`), and returns `SoakFigures`: the accounting
of every judge call (scored, unscored, failed), the retries the server saw, the wall time, and per process
of the run its threads and sockets when it started and after the plugin closed its backends, and its
memory (peak, and resident size as the calls progressed). The judge leaves about 1% of the prompts without
a rating, so the unscored path is exercised too. Linux only (it reads /proc).

Used by benchmarks/bench_soak.py (2,000 calls) and tests/test_soak.py (a smaller one).
The process helpers (`session_processes`, `signal_disposition`, `python_sigint`) also serve the tests
of interruption (tests/test_interrupt.py, tests/test_side_by_side.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge_server import FakeOpenAIServer, judge_like_reply

CATEGORIES = ("writing", "roleplay", "extraction", "stem", "humanities")  # no reference answers needed
UNRATED = "The answer is hard to judge; I will not give a rating."

# Loaded by the run's controller and workers (a conftest.py in its directory): each writes what it holds
# when it starts and after every other plugin's pytest_unconfigure (trylast), i.e. after the backends
# were closed.
PROBE_CONFTEST = """
import json, os, threading
import pytest

def _snapshot():
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {
        "os_threads": int(status["Threads"]),
        "python_threads": sorted(t.name for t in threading.enumerate()),
        "sockets": sockets,
        "peak_rss_kb": int(status["VmHWM"].split()[0]),
    }

def _write(config, when):
    role = config.workerinput["workerid"] if hasattr(config, "workerinput") else "controller"
    with open(f"probe-{role}-{when}.json", "w") as out:
        json.dump({"pid": os.getpid(), **_snapshot()}, out)

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _write(config, "start")

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    _write(config, "end")
"""


class RandomFaults:
    """An endless, seeded fault plan for FakeOpenAIServer that counts what it handed out."""

    def __init__(self, seed: int, p500: float, phang: float, pnull: float, hang: float) -> None:
        self._random = random.Random(seed)
        self._plan = ((p500, ("500",)), (phang, ("hang", hang)), (pnull, ("null-content",)))
        self.counts: Counter[str] = Counter()

    def __iter__(self) -> Iterator[tuple[Any, ...] | None]:
        while True:
            draw, fault = self._random.random(), None
            for probability, candidate in self._plan:
                if draw < probability:
                    fault = candidate
                    break
                draw -= probability
            self.counts[fault[0] if fault else "none"] += 1
            yield fault


def judge_reply(body: dict[str, Any]) -> str:
    """A rating in 1..10 from the prompt, or (for about 1% of prompts) no rating at all."""
    digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
    return UNRATED if digest[1] < 3 else judge_like_reply(1 + digest[0] % 10)


def write_questions(path: Path, count: int) -> None:
    """`count` two-turn questions spread over CATEGORIES."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            category = CATEGORIES[i % len(CATEGORIES)]
            turns = [f"Soak question {i}: describe item {i} of {category}.", f"Now shorten answer {i}."]
            out.write(json.dumps({"question_id": i + 1, "category": category, "turns": turns}) + "\n")


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes in session `sid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            if os.getsid(int(entry)) == sid and state != "Z":
                found.append(int(entry))
        except OSError:
            continue
    return found


def _status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (empty once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {name: value.strip() for name, _, value in (line.partition(":") for line in lines)}


@contextlib.contextmanager
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler in this process for the duration, as a terminal starts a program.

    A background job of a shell without job control (`pytest ... &` in a script) starts with SIGINT
    ignored, and its children inherit that; a test of Ctrl-C sets up what Ctrl-C reaches. A process this
    one starts meanwhile begins with SIGINT at its default, which Python turns into its own handler.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def signal_disposition(pid: int, signum: int) -> str:
    """What process `pid`'s main thread does with signal `signum`: blocked, ignored, caught or default."""
    status = _status(pid)
    bit = 1 << (signum - 1)
    for mask, disposition in (("SigBlk", "blocked"), ("SigIgn", "ignored"), ("SigCgt", "caught")):
        if int(status.get(mask, "0"), 16) & bit:
            return disposition
    return "default"


def _socket_count() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@dataclass
class SoakFigures:
    """What one soak run did and left behind."""

    planned: int  # judge calls the run had to make (2 per question)
    scored: int
    unscored: int
    failed: int  # judge calls with no judgment at the end (their question has an error)
    requests: int  # chat requests the server received
    faults: dict[str, int]  # faults the server injected, by kind
    wall_seconds: float
    returncode: int
    processes: dict[str, dict[str, Any]]  # role -> {"start": probe, "end": probe}
    rss_by_progress: dict[str, list[int | None]] = field(default_factory=dict)  # role -> RSS (kB) at 25..100%
    peak_threads: dict[str, int] = field(default_factory=dict)  # role -> most OS threads seen during the run
    local_threads: tuple[int, int] = (0, 0)  # this process: before the server started, after it stopped
    local_sockets: tuple[int, int] = (0, 0)
    output: str = ""
    preflight: int = 0  # one-token preflight requests (which weights are served), retries included

    @property
    def accounted(self) -> int:
        return self.scored + self.unscored + self.failed

    @property
    def retries(self) -> int:
        """Requests beyond one per judgment obtained and the one preflight call (what the faults cost)."""
        return self.requests - self.scored - self.unscored - min(1, self.preflight)

    def problems(self) -> list[str]:
        """What does not add up (empty when the soak is clean): calls not accounted for, retries that
        are not the injected faults', a thread or socket left after the backends were closed."""
        found = []
        if self.accounted != self.planned:
            found.append(f"{self.accounted} calls accounted for, {self.planned} planned")
        if self.failed == 0 and self.retries != sum(self.faults.values()):
            found.append(f"{self.retries} retries for {sum(self.faults.values())} injected faults")
        for role, probes in sorted(self.processes.items()):
            start, end = probes.get("start"), probes.get("end")
            if start is None or end is None:
                found.append(f"{role} did not report both its start and its end")
                continue
            if end["sockets"] or end["python_threads"] != ["MainThread"]:  # the call pool's threads are named
                found.append(f"{role} kept {end['sockets']} sockets and the threads {end['python_threads']}")
        if self.local_threads[1] > self.local_threads[0] or self.local_sockets[1] > self.local_sockets[0]:
            found.append(
                f"the server's process kept threads {self.local_threads}, sockets {self.local_sockets}"
            )
        return found


def account(report: dict[str, Any]) -> tuple[int, int, int]:
    """(scored, unscored, failed) judge calls of a JSON report."""
    scored = unscored = failed = 0
    for question in report["questions"]:
        if question.get("error"):
            failed += 2
            continue
        for turn in question["turns"]:
            for judgment in turn["judgments"]:
                scored += judgment["score"] is not None
                unscored += judgment["score"] is None
    return scored, unscored, failed


def run_soak(
    data: Path,
    questions: int = 1000,
    workers: int = 2,
    concurrency: int = 32,
    timeout: float = 5.0,
    hang: float = 10.0,
    rates: tuple[float, float, float] = (0.05, 0.02, 0.01),
    seed: int = 0,
    workdir: Path | None = None,
) -> SoakFigures:
    """One soak run in `workdir` (a temporary directory by default); see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="mtbench-soak-") as scratch:
        where = Path(workdir or scratch)
        where.mkdir(parents=True, exist_ok=True)
        (where / "conftest.py").write_text(PROBE_CONFTEST)
        write_questions(where / "questions.jsonl", questions)
        threads_before, sockets_before = threading.active_count(), _socket_count()
        faults = RandomFaults(seed, *rates, hang=hang)
        with FakeOpenAIServer(
            reply=judge_reply, faults=faults, max_requests=100 * questions, lifetime=3600
        ) as server:
            figures = _run(where, data, server, faults, questions, workers, concurrency, timeout)
        # The server's hung handlers wake when it stops; give them a moment to return.
        deadline = time.monotonic() + 5
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.05)
        figures.local_threads = (threads_before, threading.active_count())
        figures.local_sockets = (sockets_before, _socket_count())
        return figures


def _run(
    where: Path,
    data: Path,
    server: FakeOpenAIServer,
    faults: RandomFaults,
    questions: int,
    workers: int,
    concurrency: int,
    timeout: float,
) -> SoakFigures:
    args = [
        "--mtbench-model=fake/echo",
        "--mtbench-judge=openai/fake-judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={data}",
        f"--mtbench-questions={where / 'questions.jsonl'}",
        f"--mtbench-cache={where / 'cache'}",
        f"--mtbench-concurrency={concurrency}",
        f"--mtbench-timeout={timeout:g}",
        f"--mtbench-report={where / 'report.json'}",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        str(workers),
    ]
    planned = 2 * questions
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=where,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    # Resident size of every process of the run as the judge calls progress (at 25, 50, 75, 100%).
    marks = [planned * k // 4 for k in (1, 2, 3, 4)]
    rss: dict[int, list[int | None]] = {}
    threads: Counter[int] = Counter()
    while proc.poll() is None:
        done = server.request_count
        for pid in session_processes(proc.pid):
            status = _status(pid)
            if not status:
                continue
            threads[pid] = max(threads[pid], int(status["Threads"]))
            samples = rss.setdefault(pid, [None] * len(marks))
            for index, mark in enumerate(marks):
                if done >= mark and samples[index] is None:  # the size when the calls reached the mark
                    samples[index] = int(status["VmRSS"].split()[0])
        time.sleep(0.2)
    reader.join(timeout=30)
    wall = time.monotonic() - began
    processes: dict[str, dict[str, Any]] = {}
    for probe in sorted(where.glob("probe-*.json")):
        _, role, when = probe.stem.split("-")
        processes.setdefault(role, {})[when] = json.loads(probe.read_text())
    by_pid = {p["start"]["pid"]: role for role, p in processes.items() if "start" in p}
    report = json.loads((where / "report.json").read_text()) if (where / "report.json").exists() else None
    scored, unscored, failed = account(report) if report else (0, 0, planned)
    return SoakFigures(
        planned=planned,
        scored=scored,
        unscored=unscored,
        failed=failed,
        requests=server.request_count,
        preflight=sum(body.get("max_tokens") == 1 for body in server.requests),
        faults={k: v for k, v in faults.counts.items() if k != "none"},
        wall_seconds=wall,
        returncode=proc.returncode,
        processes=processes,
        rss_by_progress={by_pid.get(pid, str(pid)): samples for pid, samples in rss.items()},
        peak_threads={by_pid.get(pid, str(pid)): count for pid, count in threads.items()},
        output="".join(output),
    )
