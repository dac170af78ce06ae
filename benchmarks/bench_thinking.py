"""Thinking models, measured: a tiny thinking model's 80 questions with and without thinking, the calls a
reply that never finished thinking costs, and what the judge's call-style preflight adds.

1. Generation: the tiny thinker (pytest_mtbench.testing.tiny_model.build_tiny_thinker, Qwen3's
   `enable_thinking` switch) answers all 80 questions through the plugin, judged by `fake/judge-7`, once
   with thinking (the default) and once with `--mtbench-chat-template-kwargs=enable_thinking=false`, each
   on a cold cache, one after the other in this run. Printed: wall time of each, generated tokens,
   the share spent reasoning (the report's `run.answer_tokens`), and the ratio of the two wall times.
2. Calls for a reply whose reasoning used up its budget (the server's null content with
   `finish_reason: length`, as vLLM returns it): the chat requests one such turn costs with 6 retries.
3. The preflight of a judge that refuses the official call (OpenAI's reasoning models), on the loopback
   server: `--mtbench-judge-call=auto` (probe, refusal, reasoning probe) against `official` on a server
   that accepts it (the model list only), median of `--repeat` runs each, alternating.

    .venv/bin/python benchmarks/bench_thinking.py [--data DIR] [--part all|generation|calls|preflight]
        [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mtbench.backends.base import BackendOptions, SamplingParams
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def generation(data: Path, work: Path, model: Path | None) -> None:
    from pytest_mtbench.testing.tiny_model import build_tiny_thinker

    if model is None:
        began = time.monotonic()
        model = build_tiny_thinker(work / "thinker")
        print(f"tiny thinker trained in {time.monotonic() - began:.1f} s")
    rows = []
    for label, extra in (
        ("thinking", []),
        ("no thinking", ["--mtbench-chat-template-kwargs=enable_thinking=false"]),
    ):
        report = work / f"{label.replace(' ', '-')}.json"
        began = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                f"--rootdir={work}",
                f"--mtbench-model={model}",
                "--mtbench-judge=fake/judge-7",
                f"--mtbench-data={data}",
                f"--mtbench-cache={work / ('cache-' + label.replace(' ', '-'))}",
                f"--mtbench-report={report}",
                "--mtbench-batch-size=64",
                *extra,
            ],
            cwd=work,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - began
        if not report.is_file():
            sys.exit(
                f"{label}: no report (exit {proc.returncode})\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
            )
        run = json.loads(report.read_text())["run"]
        generated = run["phases"]["generation"]
        lengths = run.get("answer_tokens") or {}
        rows.append((label, seconds, generated, lengths, proc.returncode))
        share = lengths.get("reasoning_share", 0.0)
        without = lengths.get("mean_answer_tokens", generated["tokens"] / 160)
        print(
            f"{label:>12}: {seconds:6.1f} s wall (exit {proc.returncode}), {generated['tokens']} tokens "
            f"generated in {generated['seconds']:.1f} s, {generated.get('reasoning_tokens', 0)} of them "
            f"reasoning ({share:.0%}); mean {lengths.get('mean_tokens', without):.1f} tokens a turn with "
            f"reasoning, {without:.1f} without"
        )
    print(f"wall time, thinking / no thinking: {rows[0][1] / rows[1][1]:.2f}x")


def calls() -> None:
    from pytest_mtbench.backends.openai_api import OpenAIBackend

    with FakeOpenAIServer(reasoning="reasoning", faults=[("reasoning-length",)] * 20) as server:
        backend = OpenAIBackend(
            "thinker", BackendOptions(base_url=server.base_url, max_retries=6), sleep=lambda seconds: None
        )
        try:
            backend.chat([[{"role": "user", "content": "Capital of France?"}]], SamplingParams(0.0, 64))
            outcome = "a result (unfinished reasoning)"
        except Exception as exc:  # the code before thinking models: retried, then an error
            outcome = f"{type(exc).__name__}: {str(exc)[:100]}"
        finally:
            backend.close()
        print(f"null content after reasoning, 6 retries: {server.request_count} chat request(s); {outcome}")


def preflight(repeat: int) -> None:
    from pytest_mtbench.backends.openai_api import preflight as check

    def timed(server: FakeOpenAIServer, style: str) -> float:
        began = time.perf_counter()
        check("judge", BackendOptions(base_url=server.base_url, call_style=style), environ={})
        return time.perf_counter() - began

    auto, official = [], []
    with (
        FakeOpenAIServer(reasoning_model=True, model_ids=("judge",)) as refusing,
        FakeOpenAIServer(model_ids=("judge",)) as accepting,
    ):
        for _ in range(repeat):
            auto.append(timed(refusing, "auto"))
            official.append(timed(accepting, "official"))
        requests = refusing.request_count // repeat
    a, o = statistics.median(auto), statistics.median(official)
    print(
        f"preflight, reasoning judge with auto: {a * 1000:.1f} ms ({requests} chat requests + the model "
        f"list); official call: {o * 1000:.1f} ms (the model list only); added {1000 * (a - o):.1f} ms, "
        f"{a / o:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--part", choices=("all", "generation", "calls", "preflight"), default="all")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--model", type=Path, help="a tiny thinker already built (default: train one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-thinking-") as tmp:
        if args.part in ("all", "calls"):
            calls()
        if args.part in ("all", "preflight"):
            preflight(args.repeat)
        if args.part in ("all", "generation"):
            generation(args.data.resolve(), Path(tmp), args.model)


if __name__ == "__main__":
    main()
