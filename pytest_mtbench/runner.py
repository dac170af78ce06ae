"""The benchmark engine: answers, then judgments, for a group of questions, batched and cached.

No pytest here. `BenchmarkRunner.run` takes the group of questions this process runs and returns one
`QuestionRecord` per question. Generation and judging are separate steps; judging is delegated to a
mode (modes/), which asks for judgments through `CachedJudge`. Every request, an answer, a judgment or
a rating probe, goes through one path (`Completer`): the cache first, else the backend, and each result
is stored as soon as it exists (each API call, each local batch), so a killed run loses only what was
in flight.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from .backends import (
    BackendError,
    BackendOptions,
    ChatBackend,
    Completion,
    ModelSpec,
    SamplingParams,
    ServedModel,
    capabilities,
    load_backend,
    static_identity,
)
from .backends.base import FINISH_CONTEXT_OVERFLOW, FINISH_LENGTH, NOT_GENERATED
from .backends.spec import as_spec
from .cache import ResultCache, content_key
from .judge import JUDGE_MAX_TOKENS, JUDGE_TEMPERATURE, JudgeRequest, read_rating
from .modes import AnsweredQuestion, JudgeReply, JudgingMode, ProbeIf
from .questions import Question
from .reasoning import DEFAULT_MARKERS, UNFINISHED_REASONING, SplitReply, split_reply
from .records import CallInfo, Judgment, PromptSent, QuestionRecord, TurnRecord

Message = dict[str, str]
T = TypeVar("T")
ProgressCallback = Callable[[str, int, int], None]  # (phase, done, total)

RATING_CUE = "\nRating: [["
SIDE_BY_SIDE_POLL = 0.25  # seconds between checks for an interrupt while tasks run side by side
ANSWER_KIND = "answer"
JUDGMENT_KIND = "judgment"
RATING_KIND = "rating"
NOT_GENERATED_REASON = {
    FINISH_CONTEXT_OVERFLOW: "the conversation is longer than the model's context window (not sent)",
}


class RecordedJudgments(Protocol):
    """Judgments recorded elsewhere (a baseline report, FastChat files), found by the exact prompt."""

    source: str  # "baseline" or "import", recorded on each judgment served from it

    def find(self, system: str, user: str, repeat: int) -> Judgment | None: ...


class LazyBackend:
    """Builds the real backend on first use, so a fully cached run never loads a model.

    `revision` (--mtbench-model-revision) names the weights and joins the identity. Once a preflight has
    learnt what an endpoint serves (`know_served`), a cached value is served only if it does not record
    other weights, and, when `vouched` is asked for (an API candidate named by nothing but its name),
    only if it records the very weights the endpoint names now.
    """

    def __init__(self, spec: ModelSpec | str, options: BackendOptions, revision: str | None = None) -> None:
        self.model_spec = as_spec(spec)
        self.spec = self.model_spec.text  # as the user gave it: what records and messages name
        self.options = options
        self.revision = revision
        self.capabilities = capabilities(self.model_spec)
        self._backend: ChatBackend | None = None
        self._identity: dict[str, Any] | None = None
        self._loading = threading.Lock()  # models of a run may reach a shared judge at once
        self.served: ServedModel | None = None
        self.vouched = False
        self.refused: Counter[str] = Counter()  # why cached values were not served -> how many

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            identity = static_identity(self.model_spec, self.options)
            self._identity = {**identity, "revision": self.revision} if self.revision else identity
        return self._identity

    def know_served(self, served: ServedModel, *, vouched: bool) -> None:
        """What the endpoint serves now, as a preflight read it; `vouched`: reuse only what it vouches for."""
        self.served, self.vouched = served, vouched

    def accepts(self, value: dict[str, Any]) -> bool:
        """May this cached value stand for what the backend would answer now?"""
        if self.served is None:
            return True
        why = self.served.conflict(value)
        if why is None and self.vouched and not self.served.vouches_for(value):
            why = "weights not named" if not self.served.identifies_weights else "weights not recorded"
        if why is not None:
            self.refused[why] += 1
        return why is None

    def stamp(self, value: dict[str, Any]) -> dict[str, Any]:
        """A value to cache, with what the endpoint said it serves (when a preflight asked)."""
        told = self.served.stamp() if self.served is not None else {}
        return {**value, "served": told} if told else value

    def settle(self, call_style: str) -> None:
        """Use the call style a preflight settled (for a backend that asked for `auto`); the identity,
        and so every cache key, follows it."""
        if self.options.call_style == "auto" and call_style != "auto":
            self.options = replace(self.options, call_style=call_style)
            self._identity = None

    @property
    def backend(self) -> ChatBackend:
        with self._loading:
            if self._backend is None:
                self._backend = load_backend(self.model_spec, self.options)
            return self._backend

    def batch_unit(self, category: str) -> str:
        """Which requests may share a batch. A backend whose outputs depend on what else is in its batch
        batches within a category, the unit an xdist worker gets, so -n 0 and -n N give the same answers.
        Local models sample each row from its own seeded generator, so their batches span categories
        (and reach the batch size); API calls are independent, so all go at once."""
        return category if self.capabilities.batch_scope == "category" else ""

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def interrupt(self) -> None:
        """Stop the calls this backend has under way in other threads (a no-op for one without any)."""
        stop = getattr(self._backend, "interrupt", None)
        if stop is not None:
            stop()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def side_by_side(tasks: Sequence[Callable[[], T]], backends: Iterable[LazyBackend]) -> list[T]:
    """Run independent tasks in threads of their own when they only wait on API calls; their results
    in order. If any of the backends is local, the tasks run one after another in this thread: a local
    model already uses every core for one task, two at once would only fight over them.

    If this thread is interrupted (Ctrl-C, SIGTERM) or a task fails, every backend's calls under way are
    cut first, so no thread is left waiting on a slow endpoint; what arrived is already stored.
    """
    backends = list(backends)
    if len(tasks) <= 1 or any(backend.capabilities.local for backend in backends):
        return [task() for task in tasks]
    pool = ThreadPoolExecutor(len(tasks), thread_name_prefix="mtbench-side")
    try:
        futures = [pool.submit(task) for task in tasks]
        pending = set(futures)
        while pending:  # short waits: an interrupt is seen at once, whatever delivered it
            done, pending = wait(pending, timeout=SIDE_BY_SIDE_POLL, return_when=FIRST_EXCEPTION)
            failed = next((f for f in done if f.exception() is not None), None)
            if failed is not None:
                failed.result()  # raises the task's own error
        return [future.result() for future in futures]
    except BaseException:
        for backend in backends:
            backend.interrupt()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class RunSettings:
    """The settings the engine itself reads (the rest shape the backends and the mode)."""

    max_new_tokens: int = 1024
    seed: int = 0
    judge_max_tokens: int = JUDGE_MAX_TOKENS  # the official judge call uses 2048
    offline: bool = False
    think_markers: tuple[str, str] = DEFAULT_MARKERS  # inline reasoning markers (see reasoning.py)


@dataclass
class PhaseStats:
    """This process's counters for one phase (tests and benchmarks read them); the report's totals are
    derived from the question records instead (stats.phase_totals), so they also cover xdist workers."""

    calls: int = 0  # requests sent to the backend (cache misses)
    cached: int = 0  # served from the cache
    missing: int = 0  # offline: requests the cache could not serve
    tokens: int = 0  # generated tokens of the calls
    seconds: float = 0.0  # wall time spent in backend calls


@dataclass
class Job:
    """One request to serve from the cache or a backend, and its result (a cacheable plain dict)."""

    key: str
    material: dict[str, Any]
    messages: list[Message]
    value: dict[str, Any] | None = None
    cached: bool = False
    reused_from: str | None = None  # "baseline" or "import": a judgment recorded elsewhere, same prompt
    seconds: float = 0.0  # this job's share of the backend call's wall time
    started: float | None = None  # epoch seconds: when its backend call began (its batch's start)
    finished: float | None = None  # epoch seconds: when its result arrived
    missing: str | None = None  # why there is no value (offline cache miss, context overflow)
    params: SamplingParams | None = None  # how an answer is sampled (part of `material`)
    continued: bool = False  # an answer whose conversation goes on to another turn


# How a backend computes the values of jobs the cache did not have: (backend, jobs, store(index, value)).
Compute = Callable[[Any, list[Job], Callable[[int, dict[str, Any]], None]], None]


@dataclass
class Completer:
    """The one path from a request to its result: the cache first, else the backend."""

    cache: ResultCache
    offline: bool = False
    progress: ProgressCallback | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # batches may run at once

    def resolve(
        self,
        kind: str,
        jobs: list[Job],
        backend: LazyBackend,
        stats: PhaseStats,
        compute: Compute,
        phase: tuple[str, list[int], int],
        reuse: Callable[[Job], tuple[dict[str, Any], str] | None] | None = None,
    ) -> None:
        """Fill each job's value from the cache, else from `reuse` (a result recorded elsewhere, such as
        the baseline report), else by `compute`, storing each value as soon as it exists.

        `phase` is (name, [done so far], total) for progress lines; done is updated in place.
        """
        name, done, total = phase
        missing: list[Job] = []
        for job in jobs:
            hit = self.cache.get(kind, job.key)
            if hit is not None and not backend.accepts(hit):
                hit = None  # made by other weights than those served now: asked again, and replaced
            if hit is None and reuse is not None:
                found = reuse(job)
                if found is not None:
                    hit, job.reused_from = found
                    self.cache.put(kind, job.key, job.material, hit)
            if hit is not None:
                job.value, job.cached = hit, not self.cache.fresh(kind, job.key)
            else:
                missing.append(job)
        with self._lock:
            stats.cached += len(jobs) - len(missing)
            done[0] += len(jobs) - len(missing)
        if not missing:
            return
        if self.offline and not backend.capabilities.replayed:  # a replayed file is read, not called
            with self._lock:
                stats.missing += len(missing)
            for job in missing:
                job.missing = (
                    f"--mtbench-offline: {kind} not in the cache (key {job.key}, "
                    f"{self.cache.path_for(kind, job.key)}); run once without --mtbench-offline to fill it"
                )
            return
        model = backend.backend  # loaded here, outside the timed calls
        began = time.perf_counter()
        began_at = time.time()

        def store(index: int, value: dict[str, Any]) -> None:
            # Called as each result exists: a crash after this point never loses it.
            job = missing[index]
            if job.value is not None:
                return
            if value.get("finish_reason") in NOT_GENERATED:
                job.missing = (value.get("extra") or {}).get("missing") or NOT_GENERATED_REASON.get(
                    value["finish_reason"], value["finish_reason"]
                )
            else:
                value = backend.stamp(value)
                self.cache.put(kind, job.key, job.material, value)
            # Only once stored: an interrupt during the write leaves it to be handed over again.
            job.value = value
            job.started, job.finished = began_at, time.time()
            with self._lock:
                stats.calls += 1
                stats.tokens += int(value.get("n_tokens") or 0)
                done[0] += 1
                if self.progress is not None:
                    self.progress(name, done[0], total)

        try:
            compute(model, missing, store)
        except BackendError as exc:
            raise BackendError(f"{name} failed: {exc}") from None
        elapsed = time.perf_counter() - began
        with self._lock:
            stats.seconds += elapsed
        for job in missing:
            if job.value is None:
                raise BackendError(f"{backend.spec} returned no result for a {kind} request")
            job.seconds = elapsed / len(missing)


def chat_compute(
    params: SamplingParams | None,
    probe_cue: str | None = None,
    probe_if: Callable[[Job, str], bool] | None = None,
    follow_up: Callable[[Job], bool] | None = None,
    isolate_failures: bool = False,
) -> Compute:
    """Complete conversations with a ChatBackend, storing each completion as it arrives. With `params`
    None, each job is sampled with its own `job.params` (a backend with the mixed_sampling capability).
    `probe_cue` and `probe_if(job, text)` go to a backend with rating probes, `follow_up(job)` to one
    with follow_ups (see HFBackend.chat)."""

    def compute(model: Any, jobs: list[Job], store: Callable[[int, dict[str, Any]], None]) -> None:
        sampling = params if params is not None else [job.params for job in jobs]
        extra: dict[str, Any] = {}
        if probe_cue is not None:
            extra["probe_cue"] = probe_cue
            if probe_if is not None:
                extra["probe_if"] = lambda index, text: probe_if(jobs[index], text)
        if follow_up is not None:
            extra["follow_up"] = lambda index: follow_up(jobs[index])
        if isolate_failures:  # a call that fails for good fails its question, not the batch
            extra["isolate_failures"] = True
        completions = model.chat(
            [job.messages for job in jobs], sampling, on_result=lambda i, c: store(i, c.as_value()), **extra
        )
        if len(completions) != len(jobs):
            raise BackendError(f"{model.spec} returned {len(completions)} replies for {len(jobs)} prompts")
        for index, completion in enumerate(completions):
            store(index, completion.as_value())  # no-op for those already stored through on_result

    return compute


def unfinished_turns(turns: Sequence[TurnRecord]) -> list[TurnRecord]:
    """What a failed question's record keeps of its turns: a reply that never finished thinking (its
    reasoning and its count)."""
    return [t for t in turns if t.answer_call.finish_reason == UNFINISHED_REASONING]


def read_reply(value: dict[str, Any], markers: tuple[str, str]) -> SplitReply:
    """A stored reply's answer and reasoning (reasoning.split_reply over its text and reasoning field)."""
    return split_reply(str(value.get("text") or ""), value.get("reasoning"), markers)


def unfinished(value: dict[str, Any], split: SplitReply) -> bool:
    """Whether a reply stopped while still thinking: an opened reasoning never closed, or reasoning and
    no answer from a reply cut off at its token limit (a server's reasoning parser gives null content)."""
    if not split.finished:
        return True
    return split.thought and not split.answer and value.get("finish_reason") == FINISH_LENGTH


def unfinished_reason(value: dict[str, Any]) -> str:
    tokens = value.get("n_tokens") or 0
    return (
        f"{UNFINISHED_REASONING}: the model was still thinking when it stopped"
        + (f" after {tokens} tokens" if tokens else "")
        + "; give it a thinking budget (--mtbench-thinking-budget) or more tokens "
        "(--mtbench-max-new-tokens), or turn thinking off "
        "(--mtbench-chat-template-kwargs enable_thinking=false)"
    )


def call_info(job: Job) -> CallInfo:
    """What the record keeps of one request: cost, and what the endpoint said about it."""
    completion = Completion.from_value(job.value or {"text": ""})
    return CallInfo(
        cached=job.cached,
        from_baseline=job.reused_from == "baseline",
        imported=job.reused_from == "import",
        tokens=completion.n_tokens,
        prompt_tokens=completion.prompt_tokens,
        seconds=job.seconds,
        started=job.started,
        finished=job.finished,
        finish_reason=completion.finish_reason,
        truncated=completion.truncated,
        served_model=completion.served_model,
        system_fingerprint=completion.system_fingerprint,
        reasoning_tokens=completion.reasoning_tokens,
    )


@dataclass
class CachedJudge:
    """The JudgeClient every mode uses: judge calls and rating probes through the Completer."""

    judge: LazyBackend
    completer: Completer
    settings: RunSettings
    stats: PhaseStats
    reuse: Sequence[RecordedJudgments] = ()

    def judgment_material(self, request: JudgeRequest) -> dict[str, Any]:
        material = {
            "judge": self.judge.identity(),
            "messages": request.messages(),
            "temperature": JUDGE_TEMPERATURE,
            "max_tokens": self.settings.judge_max_tokens,
        }
        if request.repeat:  # repeat 0 keeps the key every earlier version wrote
            material["repeat"] = request.repeat
        return material

    def complete(self, requests: Sequence[JudgeRequest], probe_if: ProbeIf | None = None) -> list[JudgeReply]:
        jobs = []
        for request in requests:
            material = self.judgment_material(request)
            jobs.append(Job(content_key(JUDGMENT_KIND, material), material, request.messages()))
        reused = {id(job): request for request, job in zip(requests, jobs)}

        def recorded(job: Job) -> tuple[dict[str, Any], str] | None:
            request = reused[id(job)]
            for source in self.reuse:
                old = source.find(request.system, request.user, request.repeat)
                if old is not None:
                    value = Completion(
                        text=old.text,
                        n_tokens=old.call.tokens,
                        finish_reason=old.call.finish_reason,
                        truncated=old.call.truncated,
                        prompt_tokens=old.call.prompt_tokens,
                        served_model=old.call.served_model,
                        system_fingerprint=old.call.system_fingerprint,
                    ).as_value()
                    return value, source.source
            return None

        params = SamplingParams(JUDGE_TEMPERATURE, self.settings.judge_max_tokens, self.settings.seed)
        units: dict[str, list[Job]] = {}
        for request, job in zip(requests, jobs):
            units.setdefault(self.judge.batch_unit(request.category), []).append(job)
        progress = ("judging", [0], len(jobs))
        # A judge that can be probed works out the rating distribution of each reply that will be probed
        # on the prompt's KV cache while generating (served by rating_probabilities, cached as before).
        probe_cue = RATING_CUE if probe_if is not None and self.judge.capabilities.rating_probes else None

        def probe_job(job: Job, text: str) -> bool:
            return probe_if is not None and probe_if(reused[id(job)], text)

        for unit in units.values():
            compute = chat_compute(
                params,
                probe_cue=probe_cue,
                probe_if=probe_job,
                isolate_failures=self.judge.capabilities.isolated_failures,
            )
            self.completer.resolve(JUDGMENT_KIND, unit, self.judge, self.stats, compute, progress, recorded)
        replies = []
        for job in jobs:
            if job.missing or job.value is None:
                replies.append(JudgeReply(text=None, call=call_info(job), missing=job.missing))
                continue
            # The rating is read from the judge's final text only, never from its reasoning.
            split = read_reply(job.value, self.settings.think_markers)
            replies.append(JudgeReply(text=split.answer, call=call_info(job), reasoning=split.reasoning))
        return replies

    def rating_probabilities(
        self, requests: Sequence[JudgeRequest], judgments: Sequence[str]
    ) -> list[dict[int, float] | None]:
        jobs = []
        for request, judgment in zip(requests, judgments):
            material = {
                "judge": self.judge.identity(),
                "messages": request.messages(),
                "judgment": judgment,
                "cue": RATING_CUE,
            }
            jobs.append(Job(content_key(RATING_KIND, material), material, request.messages()))

        def compute(model: Any, todo: list[Job], store: Callable[[int, dict[str, Any]], None]) -> None:
            results = model.rating_probabilities(
                [j.messages for j in todo], [j.material["judgment"] for j in todo], RATING_CUE
            )
            for index, probs in enumerate(results):
                store(index, {"probabilities": {str(int(k)): float(v) for k, v in probs.items()}})

        progress = ("rating", [0], len(jobs))
        self.completer.resolve(RATING_KIND, jobs, self.judge, self.stats, compute, progress)
        return [
            None
            if job.missing or job.value is None
            else {int(k): float(v) for k, v in job.value["probabilities"].items()}
            for job in jobs
        ]


@dataclass
class BenchmarkRunner:
    """Answers then judgments for groups of questions; one QuestionRecord per question."""

    model: LazyBackend
    judge: LazyBackend
    mode: JudgingMode
    cache: ResultCache
    settings: RunSettings
    progress: ProgressCallback | None = None
    # Judgments recorded elsewhere, served for the same prompt before the judge is asked: the baseline's
    # (unchanged answers), then imported FastChat files.
    reuse: Sequence[RecordedJudgments] = ()
    generation: PhaseStats = field(default_factory=PhaseStats)
    judging: PhaseStats = field(default_factory=PhaseStats)

    def __post_init__(self) -> None:
        self.completer = Completer(self.cache, self.settings.offline, self.progress)

    def answer_material(self, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        return {"model": self.model.identity(), "messages": messages, "sampling": params.as_dict()}

    def sampling_for(self, question: Question) -> SamplingParams:
        return SamplingParams(question.temperature, self.settings.max_new_tokens, self.settings.seed)

    def generate_answers(
        self, questions: Sequence[Question], errors: dict[int, str]
    ) -> dict[int, list[TurnRecord]]:
        """Both turns of every question; turn 2 sees turn 1's question and answer.

        Questions that share a temperature are one batch (for a backend that batches by category, one
        per category); a backend that samples each row with its own parameters (mixed_sampling) takes
        every question of a turn at once. A question whose answer cannot be had is recorded in `errors`
        and not judged.
        """
        turns: dict[int, list[TurnRecord]] = {q.question_id: [] for q in questions}
        conversations: dict[int, list[Message]] = {q.question_id: [] for q in questions}
        progress = ("generating", [0], sum(len(q.turns) for q in questions))
        mixed = self.model.capabilities.mixed_sampling
        # A backend with follow_ups starts each turn 2 from what it read and wrote for turn 1.
        follow_up = (lambda job: job.continued) if self.model.capabilities.follow_ups else None
        for turn in range(max((len(q.turns) for q in questions), default=0)):
            batches: dict[tuple[str, SamplingParams | None], list[tuple[Question, Job]]] = {}
            for q in questions:
                if turn >= len(q.turns) or q.question_id in errors:
                    continue
                messages = [*conversations[q.question_id], {"role": "user", "content": q.turns[turn]}]
                params = self.sampling_for(q)
                material = self.answer_material(messages, params)
                job = Job(
                    content_key(ANSWER_KIND, material),
                    material,
                    messages,
                    params=params,
                    continued=turn + 1 < len(q.turns),
                )
                unit = (self.model.batch_unit(q.category), None if mixed else params)
                batches.setdefault(unit, []).append((q, job))

            def resolve(params: SamplingParams | None, jobs: list[Job]) -> None:
                self.completer.resolve(
                    ANSWER_KIND,
                    jobs,
                    self.model,
                    self.generation,
                    chat_compute(
                        params,
                        follow_up=follow_up,
                        isolate_failures=self.model.capabilities.isolated_failures,
                    ),
                    progress,
                )

            tasks = [
                partial(resolve, params, [job for _, job in pairs]) for (_, params), pairs in batches.items()
            ]
            if self.model.capabilities.batch_scope == "all":
                # Independent calls: an API model's batches of each temperature go at once (its
                # concurrency limit still bounds the calls in flight); a local model's, one by one.
                side_by_side(tasks, [self.model])
            else:
                for task in tasks:
                    task()
            for pairs in batches.values():
                for q, job in pairs:
                    if job.missing or job.value is None:
                        errors[q.question_id] = f"turn {turn + 1}: {job.missing or 'no answer'}"
                        continue
                    split = read_reply(job.value, self.settings.think_markers)
                    call = call_info(job)
                    if unfinished(job.value, split):
                        # Never judged as an empty answer: the question fails, the turn is kept.
                        call.finish_reason, call.truncated = UNFINISHED_REASONING, True
                        errors[q.question_id] = f"turn {turn + 1}: {unfinished_reason(job.value)}"
                    # Only the answer goes into the next turn's history, as chat templates render past
                    # turns of thinking models.
                    conversations[q.question_id] = [
                        *job.messages,
                        {"role": "assistant", "content": split.answer},
                    ]
                    turns[q.question_id].append(
                        TurnRecord(
                            turn=turn + 1,
                            question=q.turns[turn],
                            answer=split.answer,
                            temperature=q.temperature,
                            answer_call=call,
                            reasoning=split.reasoning,
                        )
                    )
        return turns

    def needs_calls(self, questions: Sequence[Question]) -> bool:
        """Whether answering and judging these questions would call a model or judge: a dry run that
        reads the cache (and the baseline's judgments) and writes nothing."""
        cache = ResultCache(self.cache.root, read=self.cache.read_enabled, write=False)
        probe = BenchmarkRunner(
            self.model, self.judge, self.mode, cache, replace(self.settings, offline=True), reuse=self.reuse
        )
        probe.run(questions)
        return probe.generation.missing + probe.judging.missing > 0

    def rejudge(self, prompts: Sequence[PromptSent]) -> list[float | None]:
        """Judge prompts again live, bypassing the cache (neither read nor written): a judge-drift check.
        Each score is read with the rule of the prompt set in use; None when unscored."""
        live = Completer(ResultCache(None), offline=False, progress=self.progress)
        client = CachedJudge(self.judge, live, self.settings, PhaseStats())
        requests = [JudgeRequest(0, 0, p.name, p.system, p.user) for p in prompts]
        scores: list[float | None] = []
        for prompt, reply in zip(prompts, client.complete(requests)):
            rule = getattr(self.mode, "prompts", {}).get(prompt.name)
            score, _ = read_rating(reply.text or "", *((rule.scale, rule.rating_pattern) if rule else ()))
            scores.append(None if score is None else float(score))
        return scores

    def run(self, questions: Sequence[Question]) -> dict[int, QuestionRecord]:
        """Answer, then judge, a group of questions: this runner's model alone (run_group for several)."""
        return {qid: result.records[0] for qid, result in run_group([self], self.mode, questions).items()}

    def finished_records(
        self, questions: Sequence[Question], since: float | None = None
    ) -> dict[int, QuestionRecord]:
        """The records of the questions whose answers and judgments are all in the cache, read without a
        call (what a run that stopped early had finished); entries written since `since` count as calls."""
        if not self.cache.read_enabled:
            return {}
        replay = BenchmarkRunner(
            self.model,
            self.judge,
            self.mode,
            ResultCache(self.cache.root, read=True, write=False, fresh_since=since),
            replace(self.settings, offline=True),
            reuse=self.reuse,
        )
        return {qid: record for qid, record in replay.run(questions).items() if record.error is None}


@dataclass
class GroupResult:
    """One question's results: a record per model, and (pairwise mode) its pair results."""

    records: list[QuestionRecord]
    pairs: list[Any] = field(default_factory=list)  # modes.pairwise.PairResult
    pair_errors: list[str] = field(default_factory=list)  # pairs that could not be judged, and why


def run_group(
    runners: Sequence[BenchmarkRunner], mode: JudgingMode, questions: Sequence[Question]
) -> dict[int, GroupResult]:
    """Answer (every runner's model, side by side where they wait on APIs) and judge (the mode, given
    every model's answers, through the first runner's judge) a group of questions: one GroupResult per
    question."""
    models = [runner.model for runner in runners]

    def generate(runner: BenchmarkRunner) -> tuple[dict[int, list[TurnRecord]], dict[int, str]]:
        errors: dict[int, str] = {}
        return runner.generate_answers(questions, errors), errors

    generated = side_by_side([partial(generate, runner) for runner in runners], models)
    records: dict[tuple[str, int], QuestionRecord] = {}
    answered: dict[str, list[AnsweredQuestion]] = {}
    for runner, (turns, errors) in zip(runners, generated):
        spec = runner.model.spec
        answered[spec] = []
        for q in questions:
            record = QuestionRecord(q.question_id, q.category, spec, error=errors.get(q.question_id))
            # A reply that never finished thinking stays in the record of its failed question.
            record.turns = (
                turns[q.question_id] if record.error is None else unfinished_turns(turns[q.question_id])
            )
            if record.error is None:
                answered[spec].append(AnsweredQuestion(q, tuple(t.answer for t in record.turns)))
            records[(spec, q.question_id)] = record
    first = runners[0]
    client = CachedJudge(first.judge, first.completer, first.settings, first.judging, first.reuse)
    outcome = mode.judge_models(answered, client)
    results = {q.question_id: GroupResult([]) for q in questions}
    for (spec, qid), record in records.items():
        why = outcome.errors.get((spec, qid))
        if record.error is None and why is not None:
            record.error, record.turns = why, []
        elif record.error is None:
            for turn in record.turns:
                turn.judgments = outcome.judgments.get((spec, qid, turn.turn), [])
        results[qid].records.append(record)
    for pair in outcome.pairs:
        results[pair.question_id].pairs.append(pair)
    for qid, why in outcome.pair_errors:
        results[qid].pair_errors.append(why)
    return results
