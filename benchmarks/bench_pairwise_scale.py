"""Pairwise judging at scale through the plugin: 10 models, all pairs, both orders, 80 questions.

45 pairs x 80 questions x 2 turns x 2 orders = 14,400 judge calls (and 10 x 80 x 2 = 1,600 answers),
against the loopback OpenAI-compatible server in its own process with LATENCY seconds per request, at
--mtbench-concurrency=64, run as a user runs it (`pytest --mtbench-mode=pairwise ...` in a subprocess).

Printed, measured side by side in this one run:
  - wall time of the whole run vs the latency ideal: answers go turn by turn (two waves of 800 calls)
    and the judge calls in one wave, each wave ceil(calls / 64) * LATENCY seconds;
  - the run's peak memory (max RSS of the pytest process);
  - the controller's own overhead: the time before the server saw the first call (start-up, collection,
    preflight) and after the last call was answered (statistics, ratings, reports), from the server's
    own request log, and the span in between vs the latency ideal;
  - the time to fit the Bradley-Terry ratings with their question bootstrap, in the same process shape.

    .venv/bin/python benchmarks/bench_pairwise_scale.py [--models 10] [--latency 0.5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "mt_bench"


class RequestClock:
    """When the server logged its first and last chat request (it prints `request N` for each)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            if line.startswith("request "):
                now = time.perf_counter()
                self.first = self.first if self.first is not None else now
                self.last = now


def start_server(
    workdir: Path, latency: float, models: list[str], calls: int
) -> tuple[subprocess.Popen, str, RequestClock]:
    port_file = workdir / "port.txt"
    command = [
        sys.executable, "-m", "pytest_mtbench.testing.judge_server", "--port-file", str(port_file),
        "--latency", str(latency), "--lifetime", "900", "--max-requests", str(calls + 1000),
    ]  # fmt: skip
    for model in [*models, "judge"]:
        command += ["--model-id", model]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    clock = RequestClock(proc)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the loopback server did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text().strip()}/v1", clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    models = [f"model-{i}" for i in range(args.models)]
    pairs = args.models * (args.models - 1) // 2
    judge_calls, answer_calls = pairs * 80 * 2 * 2, args.models * 80 * 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server, url, clock = start_server(workdir, args.latency, models, judge_calls + answer_calls)
        try:
            report_path = workdir / "report.json"
            command = [
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                *(f"--mtbench-model=openai/{m}" for m in models),
                f"--mtbench-model-base-url={url}", "--mtbench-judge=openai/judge",
                f"--mtbench-judge-base-url={url}",
                f"--mtbench-data={SHARED_DATA}", "--mtbench-no-cache", "--mtbench-mode=pairwise",
                f"--mtbench-concurrency={args.concurrency}", f"--mtbench-report={report_path}",
            ]  # fmt: skip
            began = time.perf_counter()
            run = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env={**os.environ})
            ended = time.perf_counter()
            wall = ended - began
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        finally:
            server.terminate()
            server.wait(timeout=30)
        if not report_path.exists():
            print(run.stdout[-3000:], run.stderr[-3000:])
            raise SystemExit("the run wrote no report")
        report = json.loads(report_path.read_text())

    phases = report["run"]["phases"]
    waves = [answer_calls // 2, answer_calls // 2, judge_calls]
    ideal = sum(math.ceil(calls / args.concurrency) * args.latency for calls in waves)
    if clock.first is None or clock.last is None:
        raise SystemExit("the server logged no request")
    before_first = clock.first - began
    after_last = ended - (clock.last + args.latency)  # the last request is answered LATENCY later
    span = wall - before_first - after_last
    pairwise = report["pairwise"]
    print(f"{args.models} models, {pairs} pairs, both orders, 80 questions x 2 turns; "
          f"latency {args.latency} s, concurrency {args.concurrency}; "
          f"pytest exit code {run.returncode}")  # fmt: skip
    print(f"  calls: {phases['generation']['calls']} answers, {phases['judging']['calls']} judgments "
          f"(expected {answer_calls} and {judge_calls}); {pairwise['n_pairs']} pair results, "
          f"{pairwise['n_unparsable']} unparsable")  # fmt: skip
    print(f"  wall time {wall:.1f} s vs latency ideal {ideal:.1f} s: {wall / ideal:.3f}x (target <= 1.1x)")
    print(f"  API calls from first to last answered: {span:.1f} s ({span / ideal:.3f}x the ideal)")
    print(f"  the controller alone: {before_first:.1f} s before the first call (start-up, collection, "
          f"preflight), {after_last:.1f} s after the last answer (statistics, ratings, reports)")  # fmt: skip
    print(f"  peak memory of the run: {peak_mb:.0f} MB (max RSS)")

    from pytest_mtbench.modes.pairwise import PairResult
    from pytest_mtbench.ratings import battles_from_results, bradley_terry

    results = [PairResult.from_dict(r) for r in pairwise["results"]]
    began = time.perf_counter()
    ratings = bradley_terry(battles_from_results(results))
    fit = time.perf_counter() - began
    print(
        f"  Bradley-Terry fit with {ratings.resamples} question-bootstrap resamples: {fit:.2f} s "
        f"({ratings.n_battles} battles, {ratings.n_questions} questions)"
    )


if __name__ == "__main__":
    main()
