"""Soak: 2,000 judge calls against a faulty loopback judge under -n 2, every call accounted for.

The judge server answers with 5% HTTP 500s, 2% hangs longer than the call timeout and 1% null contents
(seeded), and leaves about 1% of the prompts without a rating; the run is the command a user types
(`pytest --mtbench-model=fake/echo --mtbench-judge=openai/... -n 2`, concurrency 32 per worker) on a
generated file of 1,000 two-turn questions. The script prints the accounting (scored + unscored + failed
must equal the calls planned; the retries the server saw must equal the faults it injected), the wall
time, per process the threads and sockets when it started, at the busiest and after the backends were
closed, its peak memory and its resident size as the calls progressed (25/50/75/100%), and exits 1 when
anything does not add up. The machinery is pytest_mtbench/testing/soak.py; tests/test_soak.py runs a
smaller soak with the same checks.

    .venv/bin/python benchmarks/bench_soak.py [--data DIR] [--questions 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_mtbench.testing.soak import run_soak

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--questions", type=int, default=1000, help="two-turn questions (2 judge calls each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=5.0, help="call timeout; a hang lasts twice as long")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    figures = run_soak(
        args.data,
        questions=args.questions,
        workers=args.workers,
        concurrency=args.concurrency,
        timeout=args.timeout,
        hang=2 * args.timeout,
        seed=args.seed,
    )
    injected = sum(figures.faults.values())
    faults = ", ".join(f"{count} {kind}" for kind, count in sorted(figures.faults.items()))
    print(f"soak: {args.questions} questions, -n {args.workers}, concurrency {args.concurrency}")
    print(f"judge calls planned          {figures.planned}")
    print(
        f"  scored + unscored + failed {figures.scored} + {figures.unscored} + {figures.failed}"
        f" = {figures.accounted}"
    )
    print(
        f"requests the server got      {figures.requests} ({figures.requests / figures.planned:.3f} per call)"
    )
    print(f"  injected faults            {injected} ({faults})")
    print(f"  retries                    {figures.retries}")
    rate = figures.planned / figures.wall_seconds
    print(f"wall time                    {figures.wall_seconds:.1f} s ({rate:.0f} calls/s)")
    print(
        f"exit code                    {figures.returncode} (1: the unrated judgments fail their questions)"
    )
    header = f"{'process':<12}{'threads start/peak/end':>24}{'sockets start/end':>19}{'peak RSS':>10}"
    print(f"{header}  RSS (MB) at 25/50/75/100% of the calls")
    for role, probes in sorted(figures.processes.items()):
        start, end = probes.get("start", {}), probes.get("end", {})
        peak_threads = figures.peak_threads.get(role, "?")
        threads = f"{start.get('os_threads', '?')}/{peak_threads}/{end.get('os_threads', '?')}"
        sockets = f"{start.get('sockets', '?')}/{end.get('sockets', '?')}"
        rss = "/".join(
            "-" if kb is None else f"{kb / 1024:.0f}" for kb in figures.rss_by_progress.get(role, [])
        )
        peak = f"{end.get('peak_rss_kb', 0) / 1024:.0f} MB"
        print(f"{role:<12}{threads:>24}{sockets:>19}{peak:>10}  {rss}")
    (threads_before, threads_after), (sockets_before, sockets_after) = (
        figures.local_threads,
        figures.local_sockets,
    )
    print(
        f"this process (the server)    threads {threads_before} before / {threads_after} after,"
        f" sockets {sockets_before} / {sockets_after}"
    )
    found = figures.problems()
    for problem in found:
        print(f"PROBLEM: {problem}")
    if not found:
        print("every call accounted for; no thread or socket outlived the run")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
