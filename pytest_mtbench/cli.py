"""`pytest-mtbench compare OLD.json NEW.json`: the baseline gate on two saved reports, nothing run.

Same statistics, verdicts and exit code as `--mtbench-baseline` in a run: 1 when a category (or
overall) regressed, or was inconclusive with --strict; 2 for unusable input.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from .baseline import GateOptions, check_compatible, compare_runs, regression_gates
from .records import BaselineSummary, ReportError, RunReport

DEFAULT_MARGIN = 0.5
DEFAULT_CONFIDENCE = 0.95


def _margin(text: str) -> tuple[str | None, float]:
    """`0.5` (every group) or `coding=1.0` (one group)."""
    name, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not VALUE or NAME=VALUE (e.g. 0.5 or coding=1)"
        ) from None
    if not math.isfinite(number) or not 0 <= number <= 9:
        raise argparse.ArgumentTypeError(f"{text!r}: a margin is a number of points from 0 to 9")
    return (name.strip() or None) if sep else None, number


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.5 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the confidence is a number between 0.5 and 1, e.g. 0.95")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-mtbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="compare two JSON reports written by --mtbench-report, paired by question"
    )
    compare.add_argument("old", help="the baseline report (JSON)")
    compare.add_argument("new", help="the report to check against it (JSON)")
    compare.add_argument(
        "--margin",
        type=_margin,
        action="append",
        default=[],
        metavar="VALUE|NAME=VALUE",
        help=f"points a score may drop without being a regression (default {DEFAULT_MARGIN}); repeatable",
    )
    compare.add_argument(
        "--confidence", type=_confidence, default=DEFAULT_CONFIDENCE, help="default 0.95 (Holm-adjusted)"
    )
    compare.add_argument("--strict", action="store_true", help="an inconclusive comparison fails too")
    compare.add_argument(
        "--allow-mismatch", action="store_true", help="compare even when the runs were judged differently"
    )
    compare.add_argument("--markdown", action="store_true", help="print Markdown (for a PR comment)")
    return parser


def compare_command(args: argparse.Namespace) -> int:
    from .reports.terminal import baseline_lines

    try:
        old, new = RunReport.read(args.old), RunReport.read(args.new)
    except ReportError as exc:
        print(f"pytest-mtbench compare: {exc}", file=sys.stderr)
        return 2
    margins = {name: value for name, value in args.margin if name is not None}
    default = next((value for name, value in reversed(args.margin) if name is None), DEFAULT_MARGIN)
    options = GateOptions(
        margins=margins, default_margin=default, confidence=args.confidence, strict=args.strict
    )
    mismatches = check_compatible(old.run, new.run)
    if mismatches and not args.allow_mismatch:
        print(
            f"pytest-mtbench compare: {args.old} and {args.new} are not comparable: {'; '.join(mismatches)} "
            "(pass --allow-mismatch to compare anyway)",
            file=sys.stderr,
        )
        return 2
    comparisons = compare_runs(old.questions, new.questions, options)
    gates = regression_gates(comparisons, options)
    summary = BaselineSummary(
        path=args.old,
        margin=default,
        margins=margins,
        confidence=args.confidence,
        strict=args.strict,
        mismatches=mismatches,
        allowed_mismatch=bool(mismatches),
        reused_judgments=sum(
            j.call.from_baseline for q in new.questions for t in q.turns for j in t.judgments
        ),
        comparisons=comparisons,
    )
    if args.markdown:
        from .reports.markdown import baseline_markdown

        print(baseline_markdown(summary), end="")
    else:
        print("\n".join(baseline_lines(summary)))
    failed = [g for g in gates if not g.passed]
    for gate in failed:
        print(f"FAILED mtbench::regression[{gate.name}]: {gate.message}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return compare_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
