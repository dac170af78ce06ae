"""Calibration of the current judge to the published GPT-4-0613 scale (no pytest here).

GPT-4-0613, the judge of every published MT-Bench score, was shut down on 2026-10-23, so every run is now
judged by another model, whose scores are on its own scale. FastChat published GPT-4-0613's judgments of
its model answers (`data/mt_bench/model_judgment/gpt-4_single.jsonl`, and `model_answer/*.jsonl`). This
module turns those files into a calibration:

- **file formats**: the published files are read by fastchat.py (its single judgment and answer file
  readers); each judgment's prompt is rebuilt with this plugin's renderer
  (`modes.single.build_single_request`) and kept only when it equals the published `user_prompt` byte for
  byte (the others are counted, never used), so the current judge sees exactly what GPT-4 saw.
- **sampling**: a seeded sample of N published turns, stratified by category (an equal share each, a
  category short of turns giving its shortfall to the others), ranked by a hash of (seed, model, question,
  turn): the same files and seed give the same sample, whatever the order of the rows.
- **statistics**: agreement with GPT-4-0613 on exactly the sampled turns (Pearson, Spearman, Kendall's
  tau-b, mean absolute difference, mean offset, share within one point), per category and overall; a
  monotone mapping from the current judge's scores to GPT-4-0613's by isotonic regression (pool adjacent
  violators on the per-score means, weighted by counts; linear between knots, clamped beyond the ends);
  and calibrated scores with the uncertainty the mapping adds (a bootstrap over the calibration pairs:
  refit, map the run's judgments, take the percentile interval).
- **the calibration file** (`Calibration`): judge spec, served judge model names, the sample's identity,
  the knots, the agreement figures and the pairs themselves (for the bootstrap), versioned JSON.
- **the published files on request** (`fetch_published`, through data.py's `fetch_file`): downloaded
  and verified by sha256 against the pins in `questions/calibration.toml`, which must be filled before
  the fetch is enabled.

Isotonic rather than linear: a judge's scale is monotone in GPT-4's but rarely linear (judges crowd the
top scores, or never give 1 or 2), and isotonic regression assumes only the order. numpy and scipy are
imported inside the functions; everything returned is plain Python, safe to send across processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data import DataError, FileDownload, fetch_file, sha256_file
from .errors import MTBenchError
from .fastchat import (
    ANSWER_DIR,
    FastChatFileError,
    SingleJudgmentRow,
    read_answer_dir,
    read_single_judgments,
)
from .judge import JudgeRequest
from .modes.single import build_single_request, single_prompt_name
from .prompts import JudgePrompt, PromptError
from .questions import Question
from .records import Agreement, CalibratedScore, CalibratedScores, QuestionRecord
from .stats import OVERALL, category_order

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

TARGET = "gpt-4-0613"  # the judge of the published scores
PUBLISHED_JUDGE = "gpt-4"  # its name in FastChat's files (`judge: ["gpt-4", "single-v1"]`)
JUDGMENT_FILE = "model_judgment/gpt-4_single.jsonl"
CALIBRATION_KIND = "pytest-mtbench calibration"
SCHEMA_VERSION = 1
METHOD = "isotonic"
DEFAULT_RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # the interval is the same every time the same report is built

# Why a published row is not in the pool the sample is drawn from (counted, reported).
EXCLUDED_UNSCORED = "score -1"
EXCLUDED_SCALE = "score outside 1-10"
EXCLUDED_OTHER_JUDGE = "other judge"
EXCLUDED_DUPLICATE = "duplicate"
EXCLUDED_UNKNOWN = "unknown question"
EXCLUDED_NO_ANSWER = "no answer"
EXCLUDED_PROMPT = "prompt differs"

PINS_FILE = "calibration.toml"
PINS_TABLE = "published_gpt4_judgments"


class CalibrationError(MTBenchError, ValueError):
    """Published files or a calibration file that cannot be used; one line naming the file and the fix."""


# ---- the published files ------------------------------------------------------------------------------
def published_dir_problem(directory: Path) -> str | None:
    """Why `directory` is not FastChat's data/mt_bench with the published files (None when it is)."""
    if not directory.is_dir():
        return "not a directory"
    if not (directory / JUDGMENT_FILE).is_file():
        return f"no {JUDGMENT_FILE} there"
    if not any((directory / ANSWER_DIR).glob("*.jsonl")):
        return f"no {ANSWER_DIR}/*.jsonl there"
    return None


@dataclass(frozen=True)
class CalibrationItem:
    """One published turn to re-judge: GPT-4-0613's score and the request rebuilt for the current judge."""

    model: str
    question_id: int
    turn: int
    category: str
    published_score: float
    request: JudgeRequest

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.model, self.question_id, self.turn)


def eligible_items(
    judgments: Iterable[SingleJudgmentRow],
    answers: Mapping[str, Mapping[int, tuple[str, ...]]],
    questions: Mapping[int, Question],
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
) -> tuple[list[CalibrationItem], dict[str, int]]:
    """The published turns whose prompt this plugin rebuilds byte for byte, and why the others are out."""
    items: list[CalibrationItem] = []
    excluded: Counter[str] = Counter()
    seen: set[tuple[str, int, int]] = set()
    for row in judgments:
        key = (row.model, row.question_id, row.turn)
        question = questions.get(row.question_id)
        answer = answers.get(row.model, {}).get(row.question_id)
        if row.judge != PUBLISHED_JUDGE:
            reason = EXCLUDED_OTHER_JUDGE
        elif row.score is None:
            reason = EXCLUDED_UNSCORED
        elif not 1 <= row.score <= 10:
            reason = EXCLUDED_SCALE
        elif key in seen:
            reason = EXCLUDED_DUPLICATE
        elif question is None or row.turn > len(question.turns):
            reason = EXCLUDED_UNKNOWN
        elif answer is None or len(answer) < row.turn:
            reason = EXCLUDED_NO_ANSWER
        else:
            request = _rebuild(question, answer, row, prompts, references)
            reason = EXCLUDED_PROMPT if request is None or request.user != row.user_prompt else ""
            if not reason:
                assert request is not None and row.score is not None
                seen.add(key)
                items.append(
                    CalibrationItem(
                        row.model, row.question_id, row.turn, question.category, float(row.score), request
                    )
                )
        if reason:
            excluded[reason] += 1
    return items, dict(sorted(excluded.items()))


def _rebuild(
    question: Question,
    answer: tuple[str, ...],
    row: SingleJudgmentRow,
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
) -> JudgeRequest | None:
    """The judge request this plugin would send for the published row (None: it cannot be rebuilt)."""
    name = single_prompt_name(question, row.turn)
    if name != row.prompt_name or name not in prompts:
        return None
    reference = references.get(question.question_id) if question.needs_reference else None
    if question.needs_reference and (reference is None or len(reference) < row.turn):
        return None
    try:
        return build_single_request(question, answer, row.turn, prompts[name], reference)
    except PromptError:
        return None


def category_quotas(available: Mapping[str, int], n: int) -> dict[str, int]:
    """An equal share of `n` per category (the remainder to the first categories in order); a category
    with fewer turns than its share gives all it has, and the rest is shared among the others."""
    quota = dict.fromkeys(available, 0)
    remaining = n
    open_ = [c for c in available if available[c] > 0]
    while remaining > 0 and open_:
        share, extra = divmod(remaining, len(open_))
        for index, category in enumerate(open_):
            give = min(share + (index < extra), available[category] - quota[category])
            quota[category] += give
            remaining -= give
        open_ = [c for c in open_ if quota[c] < available[c]]
    return quota


def sample_rank(seed: int, key: tuple[str, int, int]) -> str:
    """An item's place in the seeded order: a hash, so the sample depends on the rows, not their order."""
    return hashlib.sha256(json.dumps([seed, *key]).encode("utf-8")).hexdigest()


def stratified_sample(items: Sequence[CalibrationItem], n: int, seed: int) -> list[CalibrationItem]:
    """`n` items (fewer when the pool is smaller), an equal share per category, in category order."""
    by_category: dict[str, list[CalibrationItem]] = {}
    for item in items:
        by_category.setdefault(item.category, []).append(item)
    order = category_order(by_category)
    quotas = category_quotas({c: len(by_category[c]) for c in order}, n)
    sample: list[CalibrationItem] = []
    for category in order:
        ranked = sorted(by_category[category], key=lambda item: sample_rank(seed, item.key))
        sample.extend(ranked[: quotas[category]])
    return sample


@dataclass
class PublishedSample:
    """The sample of published turns a calibration re-judges, and where it came from."""

    directory: Path
    items: list[CalibrationItem]
    requested: int
    seed: int
    rows: int  # rows of the published judgment file
    eligible: int  # rows whose prompt was rebuilt byte for byte
    excluded: dict[str, int]
    answers: dict[str, dict[int, tuple[str, ...]]] = field(default_factory=dict)  # of the sampled turns

    def answered(self, questions: Mapping[int, Question], categories: Iterable[str]) -> dict[str, list[Any]]:
        """The sampled published answers of these categories, by model, as a judging mode receives them
        (modes.AnsweredQuestion, one per sampled question of the model)."""
        from .modes import AnsweredQuestion

        wanted = set(categories)
        out: dict[str, list[Any]] = {}
        seen: set[tuple[str, int]] = set()
        for item in self.items:
            if item.category not in wanted or (item.model, item.question_id) in seen:
                continue
            seen.add((item.model, item.question_id))
            answer = self.answers[item.model][item.question_id]
            out.setdefault(item.model, []).append(AnsweredQuestion(questions[item.question_id], answer))
        return out

    def identity(self) -> dict[str, Any]:
        """What identifies the sample, for the calibration file: its files by content, seed and items."""
        files = [self.directory / JUDGMENT_FILE, *sorted((self.directory / ANSWER_DIR).glob("*.jsonl"))]
        keys = [list(item.key) for item in self.items]
        return {
            "source": str(self.directory),
            "files_sha256": {str(p.relative_to(self.directory)): sha256_file(p) for p in files},
            "seed": self.seed,
            "requested": self.requested,
            "turns": len(self.items),
            "rows": self.rows,
            "eligible": self.eligible,
            "excluded": dict(self.excluded),
            "per_category": dict(Counter(item.category for item in self.items)),
            "items_sha256": hashlib.sha256(json.dumps(keys).encode("utf-8")).hexdigest(),
            "items": keys,
        }


def load_published_sample(
    directory: str | Path,
    questions: Iterable[Question],
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
    n: int,
    seed: int,
) -> PublishedSample:
    """Read the published files in `directory` and draw the seeded, stratified sample of `n` turns."""
    directory = Path(directory)
    problem = published_dir_problem(directory)
    if problem is not None:
        raise CalibrationError(f"--mtbench-calibrate={directory}: {problem}; {PUBLISHED_HINT}")
    try:
        judgments = read_single_judgments(directory / JUDGMENT_FILE)
        answers = {model: f.answers for model, f in read_answer_dir(directory / ANSWER_DIR).items()}
    except FastChatFileError as exc:
        raise CalibrationError(str(exc)) from None
    items, excluded = eligible_items(
        judgments, answers, {q.question_id: q for q in questions}, prompts, references
    )
    if not items:
        raise CalibrationError(
            f"--mtbench-calibrate={directory}: none of the {len(judgments)} published judgments has a prompt "
            f"this plugin rebuilds byte for byte ({_excluded_text(excluded)}); use the official questions, "
            "judge prompts and the gpt-4 reference answers"
        )
    sampled = stratified_sample(items, n, seed)
    return PublishedSample(
        directory=directory,
        items=sampled,
        requested=n,
        seed=seed,
        rows=len(judgments),
        eligible=len(items),
        excluded=excluded,
        answers={
            model: {
                item.question_id: answers[model][item.question_id] for item in sampled if item.model == model
            }
            for model in dict.fromkeys(item.model for item in sampled)
        },
    )


PUBLISHED_HINT = (
    "point it at FastChat's data/mt_bench after its download_mt_bench_pregenerated.py "
    "(model_answer/*.jsonl and model_judgment/gpt-4_single.jsonl)"
)


def _excluded_text(excluded: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in excluded.items()) or "none excluded"


# ---- statistics -----------------------------------------------------------------------------------------
def agreement(judge_scores: Sequence[float], published_scores: Sequence[float]) -> dict[str, Any]:
    """How the current judge agrees with GPT-4-0613 on the same turns (difference = judge - GPT-4).

    Correlations are None with fewer than 3 pairs or when either side is constant."""
    import numpy as np
    from scipy import stats

    x = np.asarray(judge_scores, dtype=float)
    y = np.asarray(published_scores, dtype=float)
    n = int(x.size)
    result: dict[str, Any] = {
        "n": n,
        "pearson": None,
        "spearman": None,
        "kendall": None,
        "mean_abs_diff": None,
        "mean_offset": None,
        "within_one": None,
    }
    if n == 0:
        return result
    diff = x - y
    result["mean_abs_diff"] = float(np.mean(np.abs(diff)))
    result["mean_offset"] = float(np.mean(diff))
    result["within_one"] = float(np.mean(np.abs(diff) <= 1))
    if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        result["pearson"] = _finite(stats.pearsonr(x, y).statistic)
        result["spearman"] = _finite(stats.spearmanr(x, y).statistic)
        result["kendall"] = _finite(stats.kendalltau(x, y).statistic)
    return result


def agreement_table(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement per category and overall over scored pairs ({category, judge_score, published_score});
    `unscored` counts the pairs the current judge gave no rating (left out of the figures)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for pair in pairs:
        groups.setdefault(pair["category"], []).append(pair)

    def row(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        scored = [p for p in members if p["judge_score"] is not None]
        figures = agreement([p["judge_score"] for p in scored], [p["published_score"] for p in scored])
        return {**figures, "unscored": len(members) - len(scored)}

    return {
        "categories": {name: row(groups[name]) for name in category_order(groups)},
        OVERALL: row(list(pairs)),
    }


def fit_isotonic(judge_scores: Sequence[float], published_scores: Sequence[float]) -> list[list[float]]:
    """The knots [[judge score, GPT-4 score], ...] of the non-decreasing least-squares fit: the mean GPT-4
    score at each distinct judge score, adjacent violators pooled (weighted by counts)."""
    import numpy as np

    x = np.asarray(judge_scores, dtype=float)
    y = np.asarray(published_scores, dtype=float)
    if x.size == 0:
        raise ValueError("no calibration pairs to fit")
    levels, index = np.unique(x, return_inverse=True)
    counts = np.bincount(index).astype(float)
    means = np.bincount(index, weights=y) / counts
    fitted = _isotonic(means, counts)
    return [[float(a), float(b)] for a, b in zip(levels, fitted)]


def _isotonic(values: Any, weights: Any) -> Any:
    from scipy.optimize import isotonic_regression

    return isotonic_regression(values, weights=weights, increasing=True).x


def apply_mapping(knots: Sequence[Sequence[float]], scores: Sequence[float]) -> list[float]:
    """Scores on GPT-4-0613's scale: linear between knots, clamped to the end knots beyond them."""
    import numpy as np

    xs = [k[0] for k in knots]
    ys = [k[1] for k in knots]
    return [float(v) for v in np.interp(np.asarray(scores, dtype=float), xs, ys)]


@dataclass
class ScoreGroups:
    """A run's judgment scores for calibration: each scored turn's judgments (repeats included), and the
    groups (categories and overall) each turn belongs to."""

    judgments: list[list[float]] = field(default_factory=list)  # per scored turn
    groups: dict[str, list[int]] = field(default_factory=dict)  # group -> indices into `judgments`

    @classmethod
    def from_records(cls, records: Iterable[QuestionRecord]) -> ScoreGroups:
        out = cls()
        out.groups[OVERALL] = []
        for record in records:
            for turn in record.turns:
                scores = [float(j.score) for j in turn.judgments if j.score is not None]
                if not scores:
                    continue
                out.groups.setdefault(record.category, []).append(len(out.judgments))
                out.groups[OVERALL].append(len(out.judgments))
                out.judgments.append(scores)
        return out


def calibrated_scores(
    pairs_judge: Sequence[float],
    pairs_published: Sequence[float],
    run: ScoreGroups,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, dict[str, Any]]:
    """Each group's raw score, its score on GPT-4-0613's scale, and the percentile interval of the latter
    over `resamples` bootstrap refits of the mapping (the calibration pairs resampled with replacement).

    A turn's calibrated score is the mean of its mapped judgments; a group's is the mean over its turns,
    as the raw score is. The interval is the mapping's uncertainty only (the run's own sampling error is
    the table's `interval` column)."""
    import numpy as np

    x = np.asarray(pairs_judge, dtype=float)
    y = np.asarray(pairs_published, dtype=float)
    flat = np.asarray([s for scores in run.judgments for s in scores], dtype=float)
    if not flat.size:
        empty = {"raw": None, "calibrated": None, "low": None, "high": None}
        return {name: {"n_scored": 0, **empty} for name in run.groups}
    owner = np.repeat(np.arange(len(run.judgments)), [len(s) for s in run.judgments])
    per_turn = np.bincount(owner).astype(float)

    def group_means(mapped: Any) -> dict[str, float | None]:
        turns = np.bincount(owner, weights=mapped) / per_turn
        return {name: float(np.mean(turns[idx])) if idx else None for name, idx in run.groups.items()}

    raw = group_means(flat)
    point = group_means(np.asarray(apply_mapping(fit_isotonic(x, y), flat)))

    levels, index = np.unique(x, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(x.size, np.full(x.size, 1.0 / x.size), size=resamples)  # resample weights
    onehot = np.zeros((x.size, levels.size))
    onehot[np.arange(x.size), index] = 1.0
    counts, sums = draws @ onehot, draws @ (onehot * y[:, None])
    boot: dict[str, list[float]] = {name: [] for name in run.groups}
    for b in range(resamples):
        keep = counts[b] > 0
        fitted = _isotonic(sums[b, keep] / counts[b, keep], counts[b, keep])
        for name, value in group_means(np.interp(flat, levels[keep], fitted)).items():
            if value is not None:
                boot[name].append(value)
    alpha = 1.0 - confidence
    out: dict[str, dict[str, Any]] = {}
    for name, idx in run.groups.items():
        low = high = None
        if boot[name]:
            low, high = (float(v) for v in np.quantile(boot[name], [alpha / 2, 1 - alpha / 2]))
        out[name] = {
            "n_scored": len(idx),
            "raw": raw[name],
            "calibrated": point[name],
            "low": low,
            "high": high,
        }
    return out


# ---- the calibration file ---------------------------------------------------------------------------------
@dataclass
class Calibration:
    """What `--mtbench-calibrate` measured and fitted, for `--mtbench-calibration=FILE` to apply."""

    judge: str  # the judge spec that was calibrated; a run judged by another spec is refused
    judge_served: list[str]  # model names the endpoint said answered
    judge_base_url: str | None
    judge_scoring: str
    judge_call: dict[str, Any]
    sample: dict[str, Any]  # PublishedSample.identity(), plus what was actually judged
    mapping: dict[str, Any]  # {"method": "isotonic", "knots": [[judge, gpt-4], ...], ...}
    agreement: dict[str, Any]  # agreement_table(pairs)
    pairs: list[dict[str, Any]]  # every re-judged turn: category, model, question_id, turn, both scores
    plugin_version: str = ""
    created: str | None = None
    target: str = TARGET
    schema_version: int = SCHEMA_VERSION

    @property
    def knots(self) -> list[list[float]]:
        return self.mapping["knots"]

    def scored_pairs(self) -> tuple[list[float], list[float]]:
        """(judge scores, GPT-4 scores) of the pairs the current judge scored."""
        scored = [p for p in self.pairs if p["judge_score"] is not None]
        return [float(p["judge_score"]) for p in scored], [float(p["published_score"]) for p in scored]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CALIBRATION_KIND, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[Mapping[str, Any]], *, judge: str, sample: Mapping[str, Any], **info: Any
    ) -> Calibration:
        """Fit the mapping and measure agreement on the re-judged pairs."""
        pairs = [dict(p) for p in pairs]
        scored = [p for p in pairs if p["judge_score"] is not None]
        if not scored:
            raise CalibrationError("the judge scored none of the sampled turns: nothing to calibrate")
        knots = fit_isotonic([p["judge_score"] for p in scored], [p["published_score"] for p in scored])
        mapping = {
            "method": METHOD,
            "from": f"{judge} scores",
            "to": f"{TARGET} scores",
            "knots": knots,
            "outside": "clamped to the end knots",
        }
        return cls(
            judge=judge,
            sample=dict(sample),
            mapping=mapping,
            agreement=agreement_table(pairs),
            pairs=pairs,
            **info,
        )

    @classmethod
    def read(cls, path: str | Path) -> Calibration:
        """Read a calibration file; anything that is not one raises CalibrationError naming it."""
        from .jsonl import read_text

        path = Path(path)
        text = read_text(path, CalibrationError, "calibration file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("kind") != CALIBRATION_KIND:
            raise CalibrationError(f"{path}: not a calibration file (write one with --mtbench-calibrate=DIR)")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise CalibrationError(
                f"{path}: calibration schema version {data.get('schema_version')!r} is not the one this "
                f"pytest-mtbench reads ({SCHEMA_VERSION}); calibrate again"
            )
        names = set(cls.__dataclass_fields__)
        try:
            calibration = cls(**{k: v for k, v in data.items() if k in names})
            _check_shape(calibration)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise CalibrationError(f"{path}: damaged calibration file ({exc}); calibrate again") from None
        return calibration


def _check_shape(calibration: Calibration) -> None:
    """The fields the mapping and the bootstrap read are there and are numbers in order."""
    knots = calibration.knots
    if not isinstance(knots, list) or not knots:
        raise ValueError("no knots")
    for knot in knots:
        if len(knot) != 2 or not all(_is_number(v) and math.isfinite(v) for v in knot):
            raise ValueError(f"knot {knot!r} is not [judge score, GPT-4 score]")
    if any(a[0] >= b[0] or a[1] > b[1] for a, b in zip(knots, knots[1:])):
        raise ValueError("knots are not increasing")
    if not isinstance(calibration.judge, str) or not calibration.judge:
        raise ValueError("no judge spec")
    for pair in calibration.pairs:
        if not _is_number(pair["published_score"]) or not (
            pair["judge_score"] is None or _is_number(pair["judge_score"])
        ):
            raise ValueError(f"pair {pair!r} has no scores")
    if not calibration.scored_pairs()[0]:
        raise ValueError("no scored pairs")


def calibrated_report(
    calibration: Calibration,
    records: Iterable[QuestionRecord],
    *,
    path: str,
    confidence: float,
    judge_served: Sequence[str] = (),
    resamples: int = DEFAULT_RESAMPLES,
) -> CalibratedScores:
    """The run's scores on GPT-4-0613's scale, for the report's `calibration` section."""
    xs, ys = calibration.scored_pairs()
    groups = calibrated_scores(
        xs, ys, ScoreGroups.from_records(records), confidence=confidence, resamples=resamples
    )
    overall = groups.pop(OVERALL)
    served = sorted(set(judge_served))
    agreement = calibration.agreement.get(OVERALL)
    return CalibratedScores(
        path=path,
        target=calibration.target,
        judge=calibration.judge,
        judge_served=list(calibration.judge_served),
        served_mismatch=bool(served and calibration.judge_served and served != calibration.judge_served),
        turns=calibration.sample.get("judged", calibration.sample.get("turns")),
        agreement=Agreement.from_dict(agreement) if agreement is not None else None,
        mapping=dict(calibration.mapping),
        confidence=confidence,
        resamples=resamples,
        categories={name: CalibratedScore.from_dict(groups[name]) for name in category_order(groups)},
        overall=CalibratedScore.from_dict(overall),
    )


# ---- fetching the published files --------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishedPins:
    """Where the published files are downloaded from, and the sha256 each must have ("" = not pinned)."""

    base_url: str
    sha256: dict[str, str]  # path below data/mt_bench -> hex digest

    @property
    def unpinned(self) -> list[str]:
        return [name for name, digest in self.sha256.items() if not digest]


def load_published_pins(manifest: str | Path | None = None) -> PublishedPins:
    """Read the `[published_gpt4_judgments]` pins (default: the shipped `questions/calibration.toml`)."""
    from .resources import shipped_dir

    path = Path(manifest) if manifest is not None else shipped_dir("questions") / PINS_FILE
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))[PINS_TABLE]
        pins = PublishedPins(
            base_url=str(table["base_url"]),
            sha256={str(k): str(v).lower() for k, v in table["sha256"].items()},
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise CalibrationError(f"cannot read the [{PINS_TABLE}] pins in {path} ({exc!r})") from None
    return pins


def fetch_published(
    dest: str | Path, *, pins: PublishedPins | None = None, download: FileDownload | None = None
) -> Path:
    """Download the published files into `dest` (FastChat's data/mt_bench layout) and verify each by sha256.

    A file already in `dest` with the pinned hash is kept (nothing downloaded); a download is written
    beside its target and renamed into place only once verified, so a mismatch leaves nothing behind.
    Refused while any pin is empty: the fetch is enabled by filling questions/calibration.toml.
    """
    pins = pins if pins is not None else load_published_pins()
    if not pins.base_url or pins.unpinned:
        raise CalibrationError(
            f"the published files are not pinned yet ({len(pins.unpinned)} of {len(pins.sha256)} sha256 "
            f"values in [{PINS_TABLE}] of questions/{PINS_FILE} are empty): download them with FastChat's "
            "download_mt_bench_pregenerated.py and pass --mtbench-calibrate=DIR, or fill the pins"
        )
    root = Path(dest)
    for name, expected in pins.sha256.items():
        url = pins.base_url.rstrip("/") + "/" + name
        try:
            fetch_file(url, root / name, expected, download=download, pinned_in=f"questions/{PINS_FILE}")
        except DataError as exc:
            raise CalibrationError(str(exc)) from None
    return root


# ---- helpers ----------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
