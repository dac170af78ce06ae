"""Judge prompts as Jinja templates.

The official prompts are `str.format` templates; at load time each is turned into Jinja source in memory
(literal text kept verbatim inside raw blocks, `{name}` fields as `{{ name }}`), rendered in a
StrictUndefined environment with user text passed only as variables. The result is byte-identical to
FastChat's `template.format(**kwargs)`. Project-written prompts (judge_prompts/*.jsonl) are Jinja already.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .errors import MTBenchError
from .jsonl import read_jsonl


class PromptError(MTBenchError, ValueError):
    """A judge prompt file that cannot be used; the message names the file and the prompt."""


@dataclass(frozen=True)
class PromptKind:
    """What the judge passes to one named prompt (as FastChat's run_judge_single / run_judge_pair do)."""

    type: str  # "single" or "pairwise"
    answers: frozenset[str]  # the answer variables it judges: a template must use every one
    variables: frozenset[str]  # every variable it is rendered with


def _kind(type_: str, answers: str, others: str) -> PromptKind:
    return PromptKind(
        type_, frozenset(answers.split()), frozenset(answers.split()) | frozenset(others.split())
    )


# The single list of judge prompt names; the official judge_prompts.jsonl holds exactly these.
PROMPT_KINDS: dict[str, PromptKind] = {
    "single-v1": _kind("single", "answer", "question"),
    "single-math-v1": _kind("single", "answer", "question ref_answer_1"),
    "single-v1-multi-turn": _kind("single", "answer_1 answer_2", "question_1 question_2"),
    "single-math-v1-multi-turn": _kind(
        "single", "answer_1 answer_2", "question_1 question_2 ref_answer_1 ref_answer_2"
    ),
    "pair-v2": _kind("pairwise", "answer_a answer_b", "question"),
    "pair-math-v1": _kind("pairwise", "answer_a answer_b", "question ref_answer_1"),
    "pair-v2-multi-turn": _kind(
        "pairwise", "answer_a_1 answer_a_2 answer_b_1 answer_b_2", "question_1 question_2"
    ),
    "pair-math-v1-multi-turn": _kind(
        "pairwise",
        "answer_a_1 answer_a_2 answer_b_1 answer_b_2",
        "question_1 question_2 ref_answer_1 ref_answer_2",
    ),
}
PROMPT_NAMES: tuple[str, ...] = tuple(PROMPT_KINDS)


# keep_trailing_newline: Jinja would otherwise drop a final "\n" that str.format keeps.
_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=False,
    lstrip_blocks=False,
)


def format_string_to_jinja(template: str) -> str:
    """Translate a `str.format` template into Jinja source that renders to the same bytes."""
    parts: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if "endraw" in literal:
            raise PromptError("judge prompt text contains 'endraw', which cannot be kept literal")
        if literal:
            parts.append("{% raw %}" + literal + "{% endraw %}")
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise PromptError(f"unsupported format field {{{field}}} in judge prompt")
        parts.append("{{ " + field + " }}")
    return "".join(parts)


@dataclass(frozen=True)
class JudgePrompt:
    """One judge prompt: a system message and a user message template."""

    name: str
    type: str  # "single" or "pairwise"
    output_format: str  # "[[rating]]" or "[[A]]"
    system_template: jinja2.Template
    user_template: jinja2.Template
    source: str  # where it came from: the official file or a project/user file
    variables: frozenset[str]
    # How a judgment is read: None is the official rule ([[x]], else [x]); a project file may declare its
    # own pattern (one group: the rating) and scale, e.g. Prometheus-style "[RESULT] 4" on 1-5.
    rating_pattern: str | None = None
    scale: tuple[float, float] = (1, 10)

    def render(self, **variables: Any) -> tuple[str, str]:
        """Return (system prompt, user prompt); a missing variable is an error, extras are ignored
        (as with `str.format`)."""
        try:
            return self.system_template.render(**variables), self.user_template.render(**variables)
        except jinja2.UndefinedError as exc:
            raise PromptError(f"judge prompt {self.name!r} ({self.source}): {exc.message}") from exc


def _variables(source: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))


def _build(row: dict, source: str, official: bool) -> JudgePrompt:
    missing = [key for key in ("name", "system_prompt", "prompt_template") if key not in row]
    if missing:
        raise PromptError(f"{source}: judge prompt is missing the field {missing[0]!r}")
    name, system, user = row["name"], row["system_prompt"], row["prompt_template"]
    for key, value in (("name", name), ("system_prompt", system), ("prompt_template", user)):
        if not isinstance(value, str):
            raise PromptError(f"{source}: judge prompt field {key!r} must be a string")
    if official:
        # Official system prompts have no fields; they are still Jinja-escaped so braces stay literal.
        system, user = format_string_to_jinja(system), format_string_to_jinja(user)
    try:
        prompt = JudgePrompt(
            name=name,
            type=row.get("type", "single"),
            output_format=row.get("output_format", "[[rating]]"),
            system_template=_ENV.from_string(system),
            user_template=_ENV.from_string(user),
            source=source,
            variables=_variables(system) | _variables(user),
        )
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"{source}: judge prompt {name!r} is not valid Jinja: {exc.message}") from exc
    if not official:
        _check_custom(prompt, row)
        prompt = _with_rating_rule(prompt, row)
    return prompt


def _with_rating_rule(prompt: JudgePrompt, row: dict) -> JudgePrompt:
    """A project prompt's own `rating_pattern` (a regex with one group) and `scale` ([low, high])."""
    import dataclasses
    import math
    import re

    where = f"{prompt.source}: judge prompt {prompt.name!r}"
    pattern, scale = row.get("rating_pattern"), row.get("scale", [1, 10])
    if pattern is not None:
        try:
            groups = re.compile(pattern).groups if isinstance(pattern, str) else -1
        except re.error as exc:
            raise PromptError(f"{where}: rating_pattern is not a regular expression ({exc})") from None
        if groups != 1:
            raise PromptError(
                f"{where}: rating_pattern must be a string with exactly one (group): the rating"
            )
    if (
        not isinstance(scale, list)
        or len(scale) != 2
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scale
        )
        or not scale[0] < scale[1]
    ):
        raise PromptError(f"{where}: scale must be [low, high] with low < high, e.g. [1, 5]")
    return dataclasses.replace(prompt, rating_pattern=pattern, scale=(scale[0], scale[1]))


def _check_custom(prompt: JudgePrompt, row: dict) -> None:
    """A project prompt replaces a known prompt and is rendered with that prompt's variables only."""
    where = f"{prompt.source}: judge prompt {prompt.name!r}"
    kind = PROMPT_KINDS.get(prompt.name)
    if kind is None:
        raise PromptError(
            f"{where} replaces no known prompt; name it after the one it replaces: {', '.join(PROMPT_NAMES)}"
        )
    if "type" in row and prompt.type != kind.type:
        raise PromptError(f"{where} has type {prompt.type!r}, but {prompt.name} is a {kind.type!r} prompt")
    unknown = sorted(prompt.variables - kind.variables)
    if unknown:
        raise PromptError(
            f"{where} uses {', '.join(unknown)}, which the judge never passes to it; "
            f"available: {', '.join(sorted(kind.variables))}"
        )
    unused = sorted(kind.answers - prompt.variables)
    if unused:
        names = ", ".join("{{ " + name + " }}" for name in unused)
        raise PromptError(f"{where} never shows the answer it judges: add {names} to its template")


def load_judge_prompts(path: str | Path, *, official: bool) -> dict[str, JudgePrompt]:
    """Load a judge prompt JSONL file (FastChat schema). `official=True`: templates are `str.format`.

    A project file (`official=False`) may only replace known prompts (`PROMPT_NAMES`), must show the
    answer(s) each one judges and may use only the variables the judge passes.
    """
    path = Path(path).expanduser()
    prompts: dict[str, JudgePrompt] = {}
    for lineno, row in read_jsonl(path, PromptError, "judge prompt file"):
        prompt = _build(row, f"{path}:{lineno}", official)
        if prompt.name in prompts:
            raise PromptError(f"{path}:{lineno}: judge prompt {prompt.name!r} appears twice in the file")
        prompts[prompt.name] = prompt
    if not prompts:
        raise PromptError(f"{path}: holds no judge prompts")
    return prompts
