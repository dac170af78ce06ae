"""How fast does the `openai/<judge>` backend judge a full MT-Bench run (160 judge calls)?

Runs the loopback judge server (pytest_mtbench.testing.judge_server) in its own process with 200 ms of
latency per request, like a remote judge, and measures in this one run:

  (a) one call at a time (concurrency 1): 32 calls, extrapolated x5 to 160 (said so in the output)
  (b) OpenAIBackend at concurrency 16
  (c) OpenAIBackend with the default BackendOptions() (endpoint from OPENAI_BASE_URL)

Targets: (b) within 1.1x of the ideal ceil(160/16) * 0.2 s; (c) at least 15x faster than (a).

    .venv/bin/python benchmarks/bench_judging.py [--calls 160] [--latency 0.2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mtbench.backends.base import BackendOptions, Message, SamplingParams
from pytest_mtbench.backends.openai_api import OpenAIBackend
from pytest_mtbench.prompts import load_judge_prompts

REPO_ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL_SAMPLE = 32  # calls actually run one at a time; the rest is extrapolated


def judge_conversations(n: int, data: Path) -> list[list[Message]]:
    """`n` MT-Bench single-answer judge prompts (official single-v1, rendered from the pinned file in
    `data`), each with a ~900-character answer, as the plugin sends them."""
    prompt = load_judge_prompts(data / "judge_prompts.jsonl", official=True)["single-v1"]
    out = []
    for i in range(n):
        question = f"Question {i}: write a short post about a weekend by the sea, with places to see. " * 2
        answer = (f"Answer {i}: the town by the sea had markets, old streets and long beaches. " * 13)[:900]
        system, user = prompt.render(question=question, answer=answer)
        out.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
    return out


def start_server(tmp: Path, latency: float, max_requests: int) -> tuple[subprocess.Popen[bytes], str]:
    """The standalone loopback server in its own process (its own GIL, like a real remote judge)."""
    port_file = tmp / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_mtbench.testing.judge_server",
            "--port-file",
            str(port_file),
            "--latency",
            str(latency),
            "--score",
            "7",
            "--max-requests",
            str(max_requests),
            "--lifetime",
            "300",  # stops itself even if this script is killed
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("judge server did not start")
        time.sleep(0.02)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}/v1"


def timed_run(backend: OpenAIBackend, conversations: list[list[Message]]) -> float:
    params = SamplingParams(temperature=0.0, max_new_tokens=2048)
    start = time.perf_counter()
    completions = backend.chat(conversations, params)
    elapsed = time.perf_counter() - start
    assert len(completions) == len(conversations) and all("[[7]]" in c.text for c in completions)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--calls", type=int, default=160)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    conversations = judge_conversations(args.calls, args.data)
    user_chars = len(conversations[0][1]["content"])
    with tempfile.TemporaryDirectory() as tmp:
        bound = SEQUENTIAL_SAMPLE + 2 * args.calls + 10
        proc, url = start_server(Path(tmp), args.latency, max_requests=bound)
        try:
            env = {"OPENAI_BASE_URL": url}
            sequential = OpenAIBackend("judge", BackendOptions(base_url=url, concurrency=1), environ=env)
            timed_run(sequential, conversations[:1])  # warm-up: imports, first connection
            sample = min(SEQUENTIAL_SAMPLE, args.calls)
            t_a = timed_run(sequential, conversations[:sample]) * args.calls / sample
            sequential.close()

            concurrent = OpenAIBackend(
                "judge", BackendOptions(base_url=url, concurrency=args.concurrency), environ=env
            )
            t_b = timed_run(concurrent, conversations)
            concurrent.close()

            default_options = BackendOptions()
            default = OpenAIBackend("judge", default_options, environ=env)
            t_c = timed_run(default, conversations)
            default.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    ideal = math.ceil(args.calls / args.concurrency) * args.latency
    ideal_default = math.ceil(args.calls / default_options.concurrency) * args.latency
    ratio_b = t_b / ideal
    speedup_c = t_a / t_c
    extrapolation = args.calls / sample
    print(
        f"{args.calls} judge calls, {args.latency * 1000:.0f} ms server latency, "
        f"user message {user_chars} chars"
    )
    print(
        f"(a) one at a time:          {t_a:6.2f} s  "
        f"(measured {sample} calls, extrapolated x{extrapolation:g})"
    )
    print(
        f"(b) concurrency {args.concurrency:<3}:         {t_b:6.2f} s  ideal {ideal:.2f} s  "
        f"ratio to ideal {ratio_b:.3f}x"
    )
    print(
        f"(c) default options (c={default_options.concurrency}): {t_c:6.2f} s  "
        f"ideal {ideal_default:.2f} s  speed-up over (a) {speedup_c:.1f}x"
    )
    ok_b, ok_c = ratio_b <= 1.1, speedup_c >= 15
    print(
        f"target (b) <= 1.1x ideal: {'met' if ok_b else 'MISSED'}; "
        f"target (c) >= 15x faster than (a): {'met' if ok_c else 'MISSED'}"
    )
    return 0 if ok_b and ok_c else 1


if __name__ == "__main__":
    sys.exit(main())
