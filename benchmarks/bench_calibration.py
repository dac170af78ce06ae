"""What does a 160-turn calibration (`--mtbench-calibrate`) cost against a remote judge?

Writes small FastChat-format published files (4 models x 80 questions x 2 turns, made-up answers, GPT-4
scores 1..9), serves a loopback judge with 200 ms of latency per request that rates each published turn
GPT-4's score + 1, and runs the plugin as a user does (`python -m pytest --mtbench-calibrate=DIR`) at the
default concurrency (32), twice in one run:

  (a) cold cache: every sampled turn is one judge call
  (b) warm cache: the same calibration again, served from the cache

It prints the judge calls the server received, the most it had in flight, the judging time the plugin
reports and the whole wall time (pytest start-up and reading the files included), beside the ideal
ceil(160 / 32) x 0.2 s = 1.0 s and the one-call-at-a-time 160 x 0.2 s = 32 s. It also checks the result:
offset 1.00 and the mapping judge score -> score - 1.

    .venv/bin/python benchmarks/bench_calibration.py [--turns 160] [--latency 0.2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply
from pytest_mtbench.testing.published import published_files

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = ("model-a", "model-b", "model-c", "model-d")


def published_score(model: str, question_id: int, turn: int) -> int:
    return 1 + int(hashlib.sha256(f"{model}/{question_id}/{turn}".encode()).hexdigest(), 16) % 9


def calibrate(
    server: FakeOpenAIServer, directory: Path, data: Path, tmp: Path, turns: int, concurrency: int
) -> dict[str, Any]:
    """One calibration run in a subprocess; its wall time, the calls the server saw and what it printed."""
    before = server.request_count
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
            f"--mtbench-calibrate={directory}", f"--mtbench-calibrate-turns={turns}",
            "--mtbench-judge=openai/judge", f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={data}", f"--mtbench-cache={tmp / 'cache'}",
            f"--mtbench-concurrency={concurrency}", f"--mtbench-calibration-out={tmp / 'calibration.json'}",
        ],
        cwd=tmp, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"calibration failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    judging = re.search(r"judging: (\d+) calls, (\d+) cached in ([\d.]+) s", proc.stdout)
    assert judging is not None, proc.stdout
    return {
        "wall": wall,
        "server_calls": server.request_count - before,
        "calls": int(judging[1]),
        "cached": int(judging[2]),
        "judging_seconds": float(judging[3]),
        "calibration": json.loads((tmp / "calibration.json").read_text(encoding="utf-8")),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--turns", type=int, default=160)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        files = published_files(args.data, MODELS, published_score)
        directory = files.write(tmp / "mt_bench")
        scores = files.scores_by_prompt()

        def reply(body: dict[str, Any]) -> str:
            return judge_like_reply(scores[body["messages"][-1]["content"]] + 1)

        with FakeOpenAIServer(
            reply=reply, latency=args.latency, model_ids=("judge",), lifetime=600
        ) as server:
            cold = calibrate(server, directory, args.data, tmp, args.turns, args.concurrency)
            in_flight = server.max_in_flight
            warm = calibrate(server, directory, args.data, tmp, args.turns, args.concurrency)

    ideal = math.ceil(args.turns / args.concurrency) * args.latency
    sequential = args.turns * args.latency
    overall = cold["calibration"]["agreement"]["overall"]
    knots = cold["calibration"]["mapping"]["knots"]
    print(
        f"published files: {len(files.judgments)} judged turns of {len(MODELS)} models; "
        f"sample {args.turns} turns; judge latency {args.latency * 1000:.0f} ms; "
        f"concurrency {args.concurrency}"
    )
    print(
        f"(a) cold: {cold['server_calls']} judge calls received (plugin: {cold['calls']} calls, "
        f"{cold['cached']} cached), at most {in_flight} in flight; judging {cold['judging_seconds']:.2f} s = "
        f"{cold['judging_seconds'] / ideal:.2f}x the ideal {ideal:.2f} s, "
        f"{sequential / cold['judging_seconds']:.0f}x faster than one call at a time ({sequential:.0f} s); "
        f"whole run {cold['wall']:.2f} s"
    )
    print(
        f"(b) warm: {warm['server_calls']} judge calls received ({warm['cached']} cached); "
        f"whole run {warm['wall']:.2f} s, so start-up and files are about {warm['wall']:.1f} s of (a)"
    )
    recovered = all(y == x - 1 for x, y in knots)
    print(
        f"result: offset {overall['mean_offset']:+.2f}, Pearson {overall['pearson']:.2f}, "
        f"mapping recovers GPT-4's scores: {recovered}"
    )
    return 0 if cold["server_calls"] == args.turns and warm["server_calls"] == 0 and recovered else 1


if __name__ == "__main__":
    sys.exit(main())
