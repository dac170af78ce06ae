"""How long Ctrl-C (or SIGTERM) takes to return with 40 s judge calls in flight, beside pytest's own floor.

The judge is the loopback server; its first 16 calls are answered and every later one hangs for 40 s
(the call timeout is 60 s). The run (`pytest --mtbench-model=fake/echo --mtbench-judge=openai/...` on
30 questions) is started in a session of its own; once every call it sends is hung, the signal goes to
the controller's pid only. The floor is pytest itself on the same machine: a test that imports the same
packages and sleeps, interrupted with SIGINT (under -n 2 sent to the whole session, since without the
plugin the controller passes nothing on; and a plain pytest dies of SIGTERM without any summary). Each
case runs `--repeat` times; the script prints the median seconds from the signal to the controller's
exit, and that over the floor.

    .venv/bin/python benchmarks/bench_interrupt.py [--data DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mtbench.testing.judge_server import FakeOpenAIServer
from pytest_mtbench.testing.soak import session_processes

REPO_ROOT = Path(__file__).resolve().parent.parent
ANSWERED = 16
HANG = 40.0
SLEEPER = "import time, openai, pytest_mtbench.assembly\n\ndef test_sleeps():\n    time.sleep(60)\n"


def _start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes], signum: int, whole_session: bool) -> float:
    """Seconds from the signal to the controller's exit (every process of the session is gone after)."""
    sent = time.monotonic()
    (os.killpg if whole_session else os.kill)(proc.pid, signum)
    proc.wait(timeout=120)
    returned = time.monotonic() - sent
    deadline = time.monotonic() + 30
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    leftovers = session_processes(proc.pid)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    if leftovers:
        sys.exit(f"processes outlived the run: {leftovers}")
    return returned


def interrupted_run(data: Path, workers: str, signum: int) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeOpenAIServer(faults=[None] * ANSWERED + [("hang", HANG)] * 200, lifetime=300) as server,
    ):
        proc = _start(
            [
                "--mtbench-model=fake/echo",
                "--mtbench-judge=openai/fake-judge",
                f"--mtbench-judge-base-url={server.base_url}",
                f"--mtbench-data={data}",
                f"--mtbench-cache={tmp}/cache",
                f"--mtbench-timeout={HANG + 20:g}",
                "-k",
                "writing or roleplay or math",
                "-n",
                workers,
            ],
            Path(tmp),
        )
        hung = 32 if workers == "0" else 40 - ANSWERED
        deadline = time.monotonic() + 120
        while not (server.in_flight == hung and server.request_count == ANSWERED + hung):
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("the run never had its calls in flight")
            time.sleep(0.02)
        time.sleep(0.3)
        return _stop(proc, signum, whole_session=False)


def floor(workers: str) -> float:
    """pytest's own Ctrl-C: SIGINT to a sleeping test (a plain pytest dies of SIGTERM, so SIGINT for both)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "test_sleeper.py").write_text(SLEEPER)
        proc = _start(["-n", workers, "test_sleeper.py"], Path(tmp))
        time.sleep(1.0)
        while len(session_processes(proc.pid)) < 1 + int(workers):
            time.sleep(0.05)
        time.sleep(6.0 if workers != "0" else 3.0)  # imports done, the test sleeping
        return _stop(proc, signal.SIGINT, whole_session=workers != "0")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"seconds from the signal to the controller's exit, median of {args.repeat}; calls hang {HANG:g} s")
    print(f"{'case':<16}{'with calls in flight':>22}{'pytest floor':>14}{'ratio':>8}")
    for workers in ("0", "2"):
        base = statistics.median(floor(workers) for _ in range(args.repeat))
        for signum in (signal.SIGINT, signal.SIGTERM):
            ours = statistics.median(interrupted_run(args.data, workers, signum) for _ in range(args.repeat))
            case = f"{signal.Signals(signum).name} -n {workers}"
            print(f"{case:<16}{ours:>21.2f}s{base:>13.2f}s{ours / base:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
