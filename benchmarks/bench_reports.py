"""The HTML report at 80 questions x 10 models (file size, render time, Chromium load time), and the
wall time `--mtbench-mlflow` adds to a cached run, measured side by side in one go.

Ten real plugin runs (fake candidates judged by fake/judge-varied, all 80 official questions) give the
ten reports. Fake answers are short, so the page is measured twice: as run, and with every answer
padded to 1,500 characters and every judgment to 800 (about what GPT-4-class models write on
MT-Bench), the judge prompts holding the padded answers as they would. Each page is opened in a fresh
headless Chromium (the system's, through selenium) three times; the median load is printed.

The MLflow part reruns one cached run (no model or judge call) with and without `--mtbench-mlflow`,
alternating, against a local SQLite tracking store made for it; the first logged run, which creates
the store, is shown apart.

    .venv/bin/python benchmarks/bench_reports.py [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_mtbench.records import RunReport
from pytest_mtbench.reports import html
from pytest_mtbench.testing import browser

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = ("fake/echo", "fake/silent", *(f"fake/judge-{n}" for n in range(1, 9)))


def plugin_run(cwd: Path, data: Path, model: str, *extra: str, env: dict | None = None) -> float:
    """One pytest run on the 80 questions; returns its wall time."""
    began = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--mtbench-model={model}",
            "--mtbench-judge=fake/judge-varied",
            f"--mtbench-data={data}",
            f"--mtbench-cache={cwd / 'cache'}",
            *extra,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    elapsed = time.perf_counter() - began
    if proc.returncode != 0 or "could not log" in proc.stdout:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def padded(report: RunReport, answer_chars: int, judgment_chars: int) -> RunReport:
    """The report with every answer and judgment lengthened, and the judge prompts to match."""
    for record in report.questions:
        replaced: dict[str, str] = {}
        for turn in record.turns:
            longer = (turn.answer + " ") * (answer_chars // (len(turn.answer) + 1) + 1)
            replaced[turn.answer] = longer[:answer_chars]
            turn.answer = replaced[turn.answer]
        for turn in record.turns:
            for judgment in turn.judgments:
                for old, new in replaced.items():
                    judgment.prompt.user = judgment.prompt.user.replace(old, new)
                filler = "The answer is weighed against the question and the reference. " * 20
                judgment.text = filler[: max(0, judgment_chars - len(judgment.text))] + judgment.text
    return report


def measure_page(reports: list[RunReport], path: Path, repeats: int) -> tuple[float, float, float, float]:
    """(MB, seconds to render, median seconds to load in Chromium, median load-event ms)."""
    began = time.perf_counter()
    html.write_many(reports, path)
    render = time.perf_counter() - began
    loads = []
    for _ in range(repeats):
        with browser.headless_chromium() as driver:
            loads.append(browser.open_page(driver, path))
    seconds = statistics.median(load.seconds for load in loads)
    event = statistics.median(load.load_event_ms for load in loads)
    return path.stat().st_size / 1e6, render, seconds, event


def mlflow_start(env: dict[str, str]) -> float:
    """Seconds a fresh process takes to import mlflow and open the tracking store (median of 3)."""
    code = (
        "import time; began = time.perf_counter()\n"
        "from mlflow.tracking import MlflowClient\n"
        "MlflowClient().search_experiments()\n"
        "print(time.perf_counter() - began)\n"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-W", "ignore", "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, **env},
            ).stdout.split()[-1]
        )
        for _ in range(3)
    ]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    reason = browser.missing()
    if reason:
        sys.exit(f"no browser: {reason}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"10 plugin runs of 80 questions ({', '.join(MODELS)})...", flush=True)

        def one(model: str) -> Path:
            report = work / f"{model.replace('/', '-')}.json"
            plugin_run(work, opts.data, model, f"--mtbench-report={report}")
            return report

        with ThreadPoolExecutor(max_workers=2) as pool:
            paths = list(pool.map(one, MODELS))

        print("\nHTML report, 80 questions x 10 models (1600 turns, 1600 judgments)")
        print(f"{'answers':<34} {'size':>8} {'render':>8} {'load':>8} {'load event':>11}")
        for label, reports in (
            ("as run (fake, ~80 characters)", [RunReport.read(p) for p in paths]),
            ("padded to 1500 / judgments 800", [padded(RunReport.read(p), 1500, 800) for p in paths]),
        ):
            size, render, seconds, event = measure_page(reports, work / "page.html", opts.repeats)
            print(f"{label:<34} {size:>6.2f}MB {render:>7.2f}s {seconds:>7.2f}s {event:>9.0f}ms", flush=True)

        print(f"\n--mtbench-mlflow on a cached run ({opts.repeats} runs each, alternating; SQLite store)")
        store = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        plugin_run(work, opts.data, "fake/echo")  # cached from above; warms the file system too
        first = plugin_run(work, opts.data, "fake/echo", "--mtbench-mlflow", env=store)
        without, with_mlflow = [], []
        for _ in range(opts.repeats):
            without.append(plugin_run(work, opts.data, "fake/echo"))
            with_mlflow.append(plugin_run(work, opts.data, "fake/echo", "--mtbench-mlflow", env=store))
        base, logged = statistics.median(without), statistics.median(with_mlflow)
        print(f"{'without --mtbench-mlflow':<34} {base:>7.2f}s")
        print(f"{'with --mtbench-mlflow':<34} {logged:>7.2f}s")
        print(f"{'added':<34} {logged - base:>+7.2f}s ({logged / base:.2f}x)")
        print(f"{'first logged run (creates store)':<34} {first:>7.2f}s")
        print(f"{'import mlflow + open store':<34} {mlflow_start(store):>7.2f}s (a fresh process)")


if __name__ == "__main__":
    main()
