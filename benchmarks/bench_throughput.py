"""Is the footer's tokens/s true for concurrent API calls? Against the loopback server's own record.

An `openai/` candidate and an `openai/` judge, each a loopback server with `--latency` seconds a call,
answer and judge 40 questions under `-n 2` (concurrency 8 a worker). The judge server notes when each
call arrived; the time it was busy is the union of [arrival, arrival + latency]. Printed: the footer's
judging line, the judge's tokens over that busy time, and the ratio of the two rates (1.00 is true; the
rate over summed batch times read about 0.5 here before it was taken over the union of call spans).

    .venv/bin/python benchmarks/bench_throughput.py [--data DIR] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mtbench.stats import _covered
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--latency", type=float, default=0.3)
    args = parser.parse_args()
    arrivals: list[float] = []
    candidate = FakeOpenAIServer(model_ids=("cand",), latency=args.latency, max_requests=2000)
    judge = FakeOpenAIServer(
        model_ids=("judge",),
        latency=args.latency,
        max_requests=2000,
        on_request=lambda n: arrivals.append(time.time()),
    )
    with candidate, judge, tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        report = work / "report.json"
        proc = subprocess.run(
            [
                sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
                f"--rootdir={work}",
                "--mtbench-model=openai/cand", f"--mtbench-model-base-url={candidate.base_url}",
                "--mtbench-judge=openai/judge", f"--mtbench-judge-base-url={judge.base_url}",
                f"--mtbench-data={args.data.resolve()}", f"--mtbench-cache={work / 'cache'}",
                f"--mtbench-report={report}", "--mtbench-concurrency=8",
                "-k", "writing or roleplay or math or coding",
            ],
            cwd=work,
            capture_output=True,
            text=True,
        )  # fmt: skip
        if not report.is_file():
            sys.exit(f"no report (exit {proc.returncode})\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        judging = json.loads(report.read_text())["run"]["phases"]["judging"]
    footer = next(line for line in proc.stdout.splitlines() if line.startswith("judging:"))
    busy = _covered([(t, t + args.latency) for t in arrivals])
    true_rate = judging["tokens"] / busy
    print(footer)
    print(f"judge server busy {busy:.2f} s: {true_rate:.1f} tokens/s")
    print(f"footer / server-side rate: {judging['tokens_per_second'] / true_rate:.2f}")


if __name__ == "__main__":
    main()
