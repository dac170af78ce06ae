"""Whole plugin runs, measured side by side in one go: cold in-process, cold under -n 2, warm rerun.

The candidate is the tiny local chat model (pytest_mtbench.testing.tiny_model), the judge a loopback
OpenAI-compatible server (pytest_mtbench.testing.judge_server) with injected latency. Each run is the
command a user types (a pytest subprocess on all 80 official questions); the script prints wall times,
the -n 2 / -n 0 ratio, and for the warm rerun the number of model and judge calls it made (target 0)
and its own overhead (target under 5 s).

    .venv/bin/python benchmarks/bench_plugin_runs.py [--data DIR] [--max-new-tokens 64] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mtbench.testing.judge_server import FakeOpenAIServer
from pytest_mtbench.testing.tiny_model import build_tiny_chat_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(cwd: Path, args: list[str]) -> tuple[float, dict]:
    """One pytest run; returns its wall time and its JSON report."""
    report = cwd / f"report-{time.monotonic_ns()}.json"
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, f"--mtbench-report={report}"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the judge server adds per call")
    opts = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeOpenAIServer(latency=opts.latency, lifetime=1800) as server,
    ):
        work = Path(tmp)
        model = build_tiny_chat_model(work / "model")

        def args(cache: str, *extra: str) -> list[str]:
            return [
                f"--mtbench-model={model}",
                "--mtbench-judge=openai/fake-judge",
                f"--mtbench-judge-base-url={server.base_url}",
                f"--mtbench-data={opts.data}",
                f"--mtbench-cache={work / cache}",
                f"--mtbench-max-new-tokens={opts.max_new_tokens}",
                *extra,
            ]

        cold0, report0 = run(work, args("cache-n0", "-n", "0"))
        cold2, report2 = run(work, args("cache-n2", "-n", "2"))
        before = server.request_count
        warm, warm_report = run(work, args("cache-n0", "-n", "0"))
        warm_requests = server.request_count - before

    def phase(report: dict, name: str) -> dict:
        return report["run"]["phases"][name]

    gen0, gen2 = phase(report0, "generation"), phase(report2, "generation")
    warm_gen, warm_judge = phase(warm_report, "generation"), phase(warm_report, "judging")
    lines = [
        f"80 questions x 2 turns, tiny model, max_new_tokens={opts.max_new_tokens}, "
        f"judge latency {opts.latency}s",
        f"cold  -n 0 : {cold0:7.2f} s  generation {gen0['tokens']} tokens, "
        f"{gen0['tokens_per_second']:.0f} tok/s (per process)",
        f"cold  -n 2 : {cold2:7.2f} s  generation {gen2['tokens']} tokens, "
        f"{gen2['tokens_per_second']:.0f} tok/s (per process)",
        f"ratio -n 0 / -n 2 wall time: {cold0 / cold2:.2f}x",
        f"warm  -n 0 : {warm:7.2f} s  model calls {warm_gen['calls']}, judge calls {warm_judge['calls']}, "
        f"judge server requests {warm_requests}; cached {warm_gen['cached']} answers, "
        f"{warm_judge['cached']} judgments",
        f"ratio cold / warm: {cold0 / warm:.1f}x; warm overhead target < 5 s: "
        + ("met" if warm < 5 else "MISSED"),
    ]
    print("\n".join(lines))
    same = report0["categories"] == warm_report["categories"]
    print(f"warm report scores equal the cold run's: {same}")


if __name__ == "__main__":
    main()
