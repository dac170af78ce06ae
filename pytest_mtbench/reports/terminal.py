"""The score table shown at the end of a run (plain text lines, no pytest)."""

from __future__ import annotations

from typing import Any

from ..backends.base import BackendError
from ..backends.spec import ModelSpec
from ..records import (
    BaselineSummary,
    CalibratedScores,
    FastChatSummary,
    ModelSummary,
    PairwiseSummary,
    RunReport,
)


def _num(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def _interval(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None and high is None:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    start = fmt.format(low) if low is not None else "-inf"
    return f"{start} to {fmt.format(high) if high is not None else 'inf'}"


def baseline_lines(baseline: BaselineSummary) -> list[str]:
    """The comparison with the baseline: per category and overall, paired by question."""
    margins = ", ".join(f"{name} {value:g}" for name, value in baseline.margins.items())
    lines = [
        f"baseline {baseline.path}: margin {baseline.margin:g}"
        + (f" ({margins})" if margins else "")
        + f", confidence {baseline.confidence:g}, Holm-adjusted over {len(baseline.comparisons)} groups"
        + f"; {baseline.reused_judgments} judgments of unchanged answers reused from it",
    ]
    if baseline.allowed_mismatch:
        lines.append(f"  compared despite: {'; '.join(baseline.mismatches)} (--mtbench-allow-mismatch)")
    drift = baseline.judge_drift
    if drift and drift.n:
        verdict = "JUDGE CHANGED: verdicts are inconclusive" if drift.changed else "no drift"
        noise = f"judge SD {drift.judge_sd:.2f} ({drift.judge_sd_source})"
        allowed = f"allowed {drift.threshold:.2f}, {noise}"
        change = f"mean change {drift.mean_difference:+.2f}"
        lines.append(f"  judge drift: {drift.n} baseline turns re-judged, {change} ({allowed}): {verdict}")
    rows = baseline.comparisons
    if rows:
        width = max(len(name) for name in [*(r.name for r in rows), "category"])
        lines.append(
            f"  {'category':<{width}}  {'before':>6}  {'now':>6}  {'change':>6}  {'interval':>15}  verdict"
        )
        for r in rows:
            change = f"{r.difference:+.2f}" if r.difference is not None else "-"
            scores = f"{_num(r.baseline_score, 6)}  {_num(r.new_score, 6)}  {change:>6}"
            interval = _interval(r.low, r.high, signed=True)
            lines.append(f"  {r.name:<{width}}  {scores}  {interval:>15}  {r.verdict}")
    return lines


HEADER_WIDTH = 24  # characters of a model's name in a column header
FILE_SUFFIXES = (".jsonl", ".json", ".gguf")  # of replayed answer files and model files: not names


def short(spec: str) -> str:
    """A model's name in a column header: the last part of its spec without a file suffix, cut at a
    word boundary (marked with "…") when it is longer than HEADER_WIDTH."""
    try:
        name = ModelSpec.parse(spec).last_part
    except BackendError:  # a report's spec that names no model is shown as written
        name = spec
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if len(name) <= HEADER_WIDTH:
        return name
    room = HEADER_WIDTH - 1
    cut = max((i for i, c in enumerate(name[: room + 1]) if c in "-_. "), default=0)
    return (name[:cut] if cut >= room // 2 else name[:room]) + "…"


def column_names(specs: list[str]) -> list[str]:
    """Each model's header; models whose headers would read the same are numbered."""
    names = [short(spec) for spec in specs]
    return [
        f"{name}#{names[:i].count(name) + 1}" if names.count(name) > 1 else name
        for i, name in enumerate(names)
    ]


def models_lines(models: dict[str, ModelSummary]) -> list[str]:
    """Every model's score per category, one column each (several --mtbench-model)."""
    specs = list(models)
    names = list(models[specs[0]].categories)
    width = max([len(n) for n in names] + [len("category")])
    columns = column_names(specs)
    widths = [max(6, len(name)) for name in columns]
    header = f"{'category':<{width}}  " + "  ".join(f"{name:>{w}}" for name, w in zip(columns, widths))
    lines = ["", "score per model:", header, "-" * len(header)]
    for name in [*names, "overall"]:
        rows = [models[s].overall if name == "overall" else models[s].categories.get(name) for s in specs]
        cells = "  ".join(_num(row.score if row else None, w) for row, w in zip(rows, widths))
        if name == "overall":
            lines.append("-" * len(header))
        lines.append(f"{name:<{width}}  {cells}")
    return lines


def pairwise_lines(pairwise: PairwiseSummary) -> list[str]:
    """Pairwise results: win/tie/loss and win rate per model and category, then the ratings."""
    against = pairwise.baseline_model or "every other model"
    lines = [
        f"pairwise against {against}: a win needs both orders to agree; "
        f"{pairwise.n_pairs} pairs, {pairwise.n_unparsable} unparsable (left out)",
    ]
    for spec, rows in pairwise.win_rates.items():
        width = max([len(r.group) for r in rows] + [len("category")])
        header = (
            f"  {'category':<{width}}  {'win':>4}  {'tie':>4}  {'loss':>4}  {'win rate':>8}  "
            f"{'interval':>12}  {'consistent':>10}  {'longer won':>10}"
        )
        lines += [f"  {spec}:", header]
        for r in rows:
            rate = f"{r.win_rate:.2f}" if r.win_rate is not None else "-"
            interval = _interval(r.win_rate_low, r.win_rate_high)
            consistent = f"{r.consistency_rate:.0%}" if r.consistency_rate is not None else "-"
            longer = f"{r.longer_answer_won_rate:.0%}" if r.longer_answer_won_rate is not None else "-"
            lines.append(
                f"  {r.group:<{width}}  {r.wins:>4}  {r.ties:>4}  {r.losses:>4}  {rate:>8}  "
                f"{interval:>12}  {consistent:>10}  {longer:>10}"
            )
    ratings = pairwise.ratings
    if ratings:
        lines.append(
            f"ratings (Bradley-Terry, Elo scale; interval: {ratings.confidence:.0%}, "
            f"{ratings.resamples} resamples of {ratings.resample}):"
        )
        for r in ratings.ratings:
            lines.append(f"  {r.model:<40} {r.rating:7.1f}  {r.low:7.1f} to {r.high:7.1f}")
    return lines


def title(report: RunReport) -> str:
    """The table's title: what was judged, by which judge spec, and which model the endpoint served."""
    run = report.run
    served = f" (served: {', '.join(run.judge_served)})" if run.judge_served else ""
    return f"MT-Bench: {run.model} judged by {run.judge}{served}"


def render_table(report: RunReport) -> list[str]:
    """The score table, one string per line."""
    if report.pairwise is not None:  # no single-answer scores: the pairwise table is the table
        return pairwise_lines(report.pairwise) + _footer(report)
    gates = {g.name: g for g in report.gates if g.kind == "threshold"}
    categories = report.categories
    width = max([len(name) for name in categories] + [len("category"), len("overall")])
    columns = (
        f"{'scored':>7}  {'turn 1':>6}  {'turn 2':>6}  {'score':>6}  {'interval':>13}  {'min':>5}  verdict"
    )
    header = f"{'category':<{width}}  {columns}"
    lines = [header, "-" * len(header)]
    for row in [*categories.values(), report.overall_detail]:
        gate = gates.get(row.name)
        threshold = f"{gate.threshold:>5g}" if gate and gate.threshold is not None else f"{'-':>5}"
        verdict = ("PASS" if gate.passed else "FAIL") if gate else ""
        notes = row.notes()
        if notes:
            verdict = f"{verdict} ({', '.join(notes)})".strip()
        if row is report.overall_detail:
            lines.append("-" * len(header))
        scored = f"{row.n_scored}/{row.n_scored + row.n_unscored}"
        lines.append(
            f"{row.name:<{width}}  {scored:>7}  {_num(row.turn_1, 6)}  {_num(row.turn_2, 6)}  "
            f"{_num(row.score, 6)}  {_interval(row.ci_low, row.ci_high):>13}  {threshold}  {verdict}".rstrip()
        )
    if report.baseline is not None:
        lines.extend(baseline_lines(report.baseline))
    noise = report.judge_noise
    if noise is not None and noise.judge_sd is not None:
        share = noise.judge_share
        lines.append(
            f"judge noise: {noise.repeats} judgments per turn, SD {noise.judge_sd:.2f} within a turn"
            + (f"; {share:.0%} of the overall score's variance" if share is not None else "")
        )
    if report.calibration is not None:
        lines.extend(calibrated_lines(report.calibration))
    if report.models:
        lines.extend(models_lines(report.models))
    return lines + _footer(report)


def fastchat_lines(fastchat: FastChatSummary) -> list[str]:
    """What --mtbench-import-judgments reused and --mtbench-export wrote."""
    lines = []
    imported = fastchat.imported
    if imported:
        lines.append(
            f"imported judgments: {imported.rows} read, {imported.reused} reused; not reused: "
            f"{imported.differing} whose prompt differs from this run's, {imported.other_judge} by "
            f"another judge, {imported.not_in_run} not in this run, {imported.api_errors} API errors"
        )
    exported = fastchat.exported
    if exported:
        if exported.single_rows is not None:
            rows, odd = exported.single_rows, f"{exported.unscored_as_minus_1} unscored, written as -1"
        else:
            rows, odd = exported.pair_rows, f"{exported.unparsable_as_error} unparsable, as error"
        what = f"{rows} judgments ({odd})"
        lines.append(f"FastChat files in {exported.dir}: {len(exported.answer_files)} answer files, {what}")
    return lines


def _footer(report: RunReport) -> list[str]:
    """Per phase: calls, cache hits, tokens, seconds and tokens/s; then the wall time."""
    lines = fastchat_lines(report.fastchat) if report.fastchat else []
    for name, phase in report.run.phases.items():
        rate = phase.tokens_per_second
        thinking = phase.reasoning_tokens
        lines.append(
            f"{name}: {phase.calls} calls, {phase.cached} cached, {phase.tokens} tokens"
            + (f" ({thinking} reasoning)" if thinking else "")
            + f" in {phase.elapsed:.1f} s"
            + (f" ({rate:.1f} tokens/s)" if rate else "")
        )
    lengths = report.run.answer_tokens
    if lengths:
        lines.append(
            f"answers: {lengths.mean_tokens:.0f} tokens a turn with reasoning, "
            f"{lengths.mean_answer_tokens:.0f} without ({lengths.reasoning_share:.0%} spent reasoning)"
        )
    if report.run.wall_seconds is not None:
        lines.append(f"wall time: {report.run.wall_seconds:.1f} s")
    return lines


# ---- calibration to the published GPT-4-0613 scale ------------------------------------------------------
def _figure(value: float | None, fmt: str, width: int) -> str:
    return f"{value:{fmt}}".rjust(width) if value is not None else "-".rjust(width)


def calibrated_lines(calibration: CalibratedScores) -> list[str]:
    """The run's scores on the GPT-4-0613 scale: a block under the table (the columns above stay as they
    are); the interval is the uncertainty the mapping adds."""
    pearson = calibration.agreement.pearson if calibration.agreement else None
    lines = [
        f"{calibration.target} scale (calibration {calibration.path}: {calibration.turns} published turns"
        + (f", Pearson {pearson:.2f}" if pearson is not None else "")
        + f"; interval: the mapping's, {calibration.confidence:g})",
    ]
    rows = {**calibration.categories, "overall": calibration.overall}
    width = max(len(name) for name in [*rows, "category"])
    lines.append(f"  {'category':<{width}}  {'raw':>6}  {'GPT-4 scale':>11}  {'interval':>13}")
    for name, row in rows.items():
        lines.append(
            f"  {name:<{width}}  {_num(row.raw, 6)}  {_num(row.calibrated, 11)}  "
            f"{_interval(row.low, row.high):>13}"
        )
    if calibration.served_mismatch:
        lines.append(
            f"  note: the calibration was made with {', '.join(calibration.judge_served)} served; "
            "this run's judge endpoint served another model"
        )
    return lines


def calibration_title(summary: dict[str, Any]) -> str:
    """The title of a calibration run's table: which judge against which."""
    served = f" (served: {', '.join(summary['judge_served'])})" if summary.get("judge_served") else ""
    return f"MT-Bench calibration: {summary['judge']}{served} against {summary['target']}"


def calibration_lines(summary: dict[str, Any]) -> list[str]:
    """Agreement with GPT-4-0613 on the re-judged published turns, per category and overall (difference
    = this judge - GPT-4), the fitted mapping, the sample and what the judging cost."""
    table = summary["agreement"]
    rows = {**table["categories"], "overall": table["overall"]}
    width = max(len(name) for name in [*rows, "category"])
    header = (
        f"{'category':<{width}}  {'turns':>5}  {'unscored':>8}  {'pearson':>7}  {'spearman':>8}  "
        f"{'kendall':>7}  {'mean |d|':>8}  {'offset':>6}  {'within 1':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        if name == "overall":
            lines.append("-" * len(header))
        within = f"{row['within_one']:.0%}" if row["within_one"] is not None else "-"
        lines.append(
            f"{name:<{width}}  {row['n'] + row['unscored']:>5}  {row['unscored']:>8}  "
            f"{_figure(row['pearson'], '.2f', 7)}  {_figure(row['spearman'], '.2f', 8)}  "
            f"{_figure(row['kendall'], '.2f', 7)}  {_figure(row['mean_abs_diff'], '.2f', 8)}  "
            f"{_figure(row['mean_offset'], '+.2f', 6)}  {within:>8}"
        )
    knots = ", ".join(f"{x:g}->{y:.2f}" for x, y in summary["mapping"]["knots"])
    method, target = summary["mapping"]["method"], summary["target"]
    lines.append(f"mapping ({method}, judge score -> {target} score): {knots}")
    sample = summary["sample"]
    excluded = ", ".join(f"{n} {why}" for why, n in sample["excluded"].items()) or "none"
    lines.append(
        f"sample: {sample['judged']} of {sample['eligible']} usable published turns (seed {sample['seed']}, "
        f"{sample['requested']} asked); {sample['rows']} published rows, excluded: {excluded}"
    )
    judging = summary.get("judging")
    if judging:
        lines.append(
            f"judging: {judging['calls']} calls, {judging['cached']} cached in {judging['seconds']:.1f} s"
        )
    return lines
