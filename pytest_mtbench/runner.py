"""The benchmark engine: answers and judgments for a group of questions, batched and cached.

No pytest here. The plugin hands a group of questions (what this process runs) to `BenchmarkRunner.run`,
which returns one plain-data record per question. Every answer and judgment is written to the cache as
soon as it exists (each API call, each local batch), so a killed run loses only the calls in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .backends import (
    BackendError,
    BackendOptions,
    ChatBackend,
    Completion,
    SamplingParams,
    load_backend,
    split_spec,
    static_identity,
)
from .backends.base import RatingProber
from .cache import ResultCache, content_key
from .judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_TEMPERATURE,
    JudgeRequest,
    TurnVerdict,
    build_single_request,
    constrained_verdict,
    official_verdict,
    single_prompt_name,
)
from .prompts import JudgePrompt
from .questions import Question

Message = dict[str, str]
ProgressCallback = Callable[[str, int, int], None]  # (phase, done, total)

RATING_CUE = "\nRating: [["
ANSWER_KIND = "answer"
JUDGMENT_KIND = "judgment"
RATING_KIND = "rating"


class LazyBackend:
    """Builds the real backend on first use, so a fully cached run never loads a model."""

    def __init__(self, spec: str, options: BackendOptions) -> None:
        self.spec = spec
        self.options = options
        self._backend: ChatBackend | None = None
        self._identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = static_identity(self.spec, self.options)
        return self._identity

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            self._backend = load_backend(self.spec, self.options)
        return self._backend

    def batch_unit(self, question: Question) -> str:
        """Which questions may share a batch. A local model's outputs can depend on what else is in its
        batch (sampling seeds, padding), so it batches within a category, the unit an xdist worker gets:
        then -n 0 and -n N give the same answers. API calls are independent, so all go at once."""
        return question.category if split_spec(self.spec)[0] == "hf" else ""

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


@dataclass(frozen=True)
class RunSettings:
    max_new_tokens: int = 1024
    seed: int = 0
    judge_scoring: str = "official"  # or "constrained" (local judges only)
    judge_max_tokens: int = JUDGE_MAX_TOKENS  # the official judge call uses 2048
    offline: bool = False


@dataclass
class PhaseStats:
    """This process's counters for one phase (tests and benchmarks read them); the report's totals are
    derived from the question records instead (stats.phase_totals), so they also cover xdist workers."""

    calls: int = 0  # conversations sent to the backend (cache misses)
    cached: int = 0  # served from the cache
    tokens: int = 0  # generated tokens of the calls
    seconds: float = 0.0  # wall time spent in backend calls


@dataclass
class _Job:
    """One conversation to complete, and where its result goes."""

    key: str
    material: dict[str, Any]
    messages: list[Message]
    result: dict[str, Any] | None = None
    share_seconds: float = 0.0
    missing: str | None = None  # offline mode: why this job has no result


@dataclass
class BenchmarkRunner:
    model: LazyBackend
    judge: LazyBackend
    prompts: dict[str, JudgePrompt]
    references: dict[int, tuple[str, ...]]
    cache: ResultCache
    settings: RunSettings
    progress: ProgressCallback | None = None
    generation: PhaseStats = field(default_factory=PhaseStats)
    judging: PhaseStats = field(default_factory=PhaseStats)

    # ---- cache keys: exactly what changes the output -------------------------------------------
    def answer_material(self, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        return {"model": self.model.identity(), "messages": messages, "sampling": params.as_dict()}

    def judgment_material(self, request: JudgeRequest) -> dict[str, Any]:
        return {
            "judge": self.judge.identity(),
            "messages": request.messages(),
            "temperature": JUDGE_TEMPERATURE,
            "max_tokens": self.settings.judge_max_tokens,
        }

    # ---- the two phases -------------------------------------------------------------------------
    def sampling_for(self, question: Question) -> SamplingParams:
        return SamplingParams(question.temperature, self.settings.max_new_tokens, self.settings.seed)

    def generate_answers(
        self, questions: list[Question], errors: dict[int, str]
    ) -> dict[int, list[dict[str, Any]]]:
        """Both turns of every question; turn 2 sees turn 1's question and answer.

        A question whose answer cannot be had (offline cache miss) is recorded in `errors` and skipped.
        """
        answers: dict[int, list[dict[str, Any]]] = {q.question_id: [] for q in questions}
        conversations: dict[int, list[Message]] = {q.question_id: [] for q in questions}
        n_turns = max(len(q.turns) for q in questions)
        total = sum(len(q.turns) for q in questions)
        done = 0
        for turn in range(n_turns):
            by_params: dict[tuple[str, SamplingParams], list[tuple[Question, _Job]]] = {}
            for q in questions:
                if turn >= len(q.turns) or q.question_id in errors:
                    continue
                messages = [*conversations[q.question_id], {"role": "user", "content": q.turns[turn]}]
                params = self.sampling_for(q)
                material = self.answer_material(messages, params)
                job = _Job(content_key(ANSWER_KIND, material), material, messages)
                by_params.setdefault((self.model.batch_unit(q), params), []).append((q, job))
            for (_, params), pairs in by_params.items():
                jobs = [job for _, job in pairs]
                self._complete(
                    ANSWER_KIND, jobs, params, self.model, self.generation, "generating", done, total
                )
                done += len(jobs)
                for q, job in pairs:
                    if job.result is None:
                        errors[q.question_id] = job.missing or "no answer"
                        continue
                    text = job.result["text"]
                    conversations[q.question_id] = [*job.messages, {"role": "assistant", "content": text}]
                    answers[q.question_id].append(
                        {
                            "answer": text,
                            "answer_tokens": job.result.get("n_tokens", 0),
                            "answer_cached": job.result.get("cached", False),
                            "generation_seconds": job.share_seconds,
                            "temperature": params.temperature,
                        }
                    )
        return answers

    def judge_answers(
        self,
        questions: list[Question],
        answers: dict[int, list[dict[str, Any]]],
        errors: dict[int, str],
        meta: dict[tuple[int, int], dict[str, Any]],
    ) -> dict[int, list[TurnVerdict]]:
        """Judge every turn; per (question, turn), `meta` receives the call's cache flag, tokens, time and
        rendered prompt for the report."""
        requests: list[tuple[Question, JudgeRequest, _Job]] = []
        questions = [q for q in questions if q.question_id not in errors]
        for q in questions:
            texts = [a["answer"] for a in answers[q.question_id]]
            reference = self.references.get(q.question_id) if q.needs_reference else None
            for turn in range(1, len(q.turns) + 1):
                prompt = self.prompts[single_prompt_name(q, turn)]
                request = build_single_request(q, texts, turn, prompt, reference)
                material = self.judgment_material(request)
                requests.append(
                    (q, request, _Job(content_key(JUDGMENT_KIND, material), material, request.messages()))
                )
        params = SamplingParams(JUDGE_TEMPERATURE, self.settings.judge_max_tokens, self.settings.seed)
        units: dict[str, list[_Job]] = {}
        for q, _, job in requests:
            units.setdefault(self.judge.batch_unit(q), []).append(job)
        done = 0
        for jobs in units.values():
            self._complete(
                JUDGMENT_KIND, jobs, params, self.judge, self.judging, "judging", done, len(requests)
            )
            done += len(jobs)
        verdicts: dict[int, list[TurnVerdict]] = {q.question_id: [] for q in questions}
        unscored: list[tuple[int, JudgeRequest, TurnVerdict]] = []
        for q, request, job in requests:
            if job.result is None:
                errors[q.question_id] = job.missing or "no judgment"
                continue
            meta[(q.question_id, request.turn)] = {
                "judgment_cached": job.result.get("cached", False),
                "judgment_tokens": job.result.get("n_tokens", 0),
                "judging_seconds": job.share_seconds,
                "judge_prompt": {"name": request.prompt_name, "system": request.system, "user": request.user},
            }
            verdict = official_verdict(request, job.result["text"])
            verdicts[q.question_id].append(verdict)
            if verdict.score is None:
                unscored.append((q.question_id, request, verdict))
        unscored = [item for item in unscored if item[0] not in errors]
        if unscored and self.settings.judge_scoring == "constrained":
            self._constrained_fallback(unscored, verdicts, errors)
        return verdicts

    def run(self, questions: list[Question]) -> dict[int, dict[str, Any]]:
        """Answer and judge a group of questions; one plain-data record per question."""
        errors: dict[int, str] = {}
        answers = self.generate_answers(questions, errors)
        meta: dict[tuple[int, int], dict[str, Any]] = {}
        verdicts = self.judge_answers(questions, answers, errors, meta)
        records: dict[int, dict[str, Any]] = {}
        for q in questions:
            if q.question_id in errors:
                records[q.question_id] = {
                    "question_id": q.question_id,
                    "category": q.category,
                    "turns": [],
                    "error": errors[q.question_id],
                }
                continue
            turns = []
            for answer, verdict, text in zip(answers[q.question_id], verdicts[q.question_id], q.turns):
                call = meta.get((q.question_id, verdict.turn), {})
                turns.append({"question": text, **answer, **verdict.as_dict(), **call})
            records[q.question_id] = {"question_id": q.question_id, "category": q.category, "turns": turns}
        return records

    # ---- internals ------------------------------------------------------------------------------
    def _complete(
        self,
        kind: str,
        jobs: list[_Job],
        params: SamplingParams,
        backend: LazyBackend,
        stats: PhaseStats,
        phase: str,
        done: int,
        total: int,
    ) -> None:
        """Fill job.result from the cache or the backend, storing each result as soon as it exists."""
        missing: list[_Job] = []
        for job in jobs:
            hit = self.cache.get(kind, job.key)
            if hit is not None:
                job.result = {**hit, "cached": True}
                stats.cached += 1
            else:
                missing.append(job)
        done += len(jobs) - len(missing)
        if missing and self.settings.offline:
            for job in missing:
                job.missing = (
                    f"--mtbench-offline: {kind} not in the cache (key {job.key}, "
                    f"{self.cache.path_for(kind, job.key)}); run once without --mtbench-offline to fill it"
                )
            return
        if not missing:
            return
        model = backend.backend  # loaded here, outside the timed generation
        began = time.perf_counter()
        finished = done

        def store(index: int, completion: Completion) -> None:
            # Called as each result exists: a crash after this point never loses it.
            nonlocal finished
            job = missing[index]
            value = {"text": completion.text, "n_tokens": int(completion.n_tokens)}
            self.cache.put(kind, job.key, job.material, value)
            job.result = value
            stats.calls += 1
            stats.tokens += value["n_tokens"]
            finished += 1
            if self.progress is not None:
                self.progress(phase, finished, total)

        try:
            completions = model.chat([job.messages for job in missing], params, on_result=store)
        except BackendError as exc:
            raise BackendError(f"{phase} failed: {exc}") from None
        elapsed = time.perf_counter() - began
        stats.seconds += elapsed
        if len(completions) != len(missing):
            raise BackendError(
                f"{backend.spec} returned {len(completions)} replies for {len(missing)} prompts"
            )
        for job, completion in zip(missing, completions):
            if job.result is None:  # a backend that did not call on_result
                store(missing.index(job), completion)
            job.share_seconds = elapsed / len(missing)

    def _constrained_fallback(
        self,
        unscored: Iterable[tuple[int, JudgeRequest, TurnVerdict]],
        verdicts: dict[int, list[TurnVerdict]],
        errors: dict[int, str],
    ) -> None:
        unscored = list(unscored)
        pending: list[tuple[int, TurnVerdict, _Job]] = []
        probabilities: dict[str, dict[int, float]] = {}
        for qid, request, verdict in unscored:
            material = {
                "judge": self.judge.identity(),
                "messages": request.messages(),
                "judgment": verdict.judgment,
                "cue": RATING_CUE,
            }
            job = _Job(content_key(RATING_KIND, material), material, request.messages())
            hit = self.cache.get(RATING_KIND, job.key)
            if hit is not None:
                probabilities[job.key] = {int(k): float(v) for k, v in hit["probabilities"].items()}
            pending.append((qid, verdict, job))
        todo = [(qid, verdict, job) for qid, verdict, job in pending if job.key not in probabilities]
        if todo and self.settings.offline:
            for qid, _, job in todo:
                errors[qid] = f"--mtbench-offline: constrained rating not in the cache (key {job.key})"
            pending = [item for item in pending if item[0] not in errors]
            todo = []
        if todo:
            judge = self.judge.backend
            if not isinstance(judge, RatingProber):
                raise BackendError(
                    f"--mtbench-judge-scoring=constrained needs a local judge (hf/...); {self.judge.spec} "
                    "cannot report rating probabilities"
                )
            began = time.perf_counter()
            results = judge.rating_probabilities(
                [job.messages for _, _, job in todo], [v.judgment for _, v, _ in todo], RATING_CUE
            )
            self.judging.seconds += time.perf_counter() - began
            for (_, _, job), probs in zip(todo, results):
                clean = {int(k): float(v) for k, v in probs.items()}
                self.cache.put(
                    RATING_KIND,
                    job.key,
                    job.material,
                    {"probabilities": {str(k): v for k, v in clean.items()}},
                )
                probabilities[job.key] = clean
        for qid, verdict, job in pending:
            turns = verdicts[qid]
            turns[turns.index(verdict)] = constrained_verdict(verdict, probabilities[job.key])
