"""Judge prompts as Jinja templates.

The official prompts are `str.format` templates; at load time each is turned into Jinja source in memory
(literal text kept verbatim inside raw blocks, `{name}` fields as `{{ name }}`), rendered in a
StrictUndefined environment with user text passed only as variables. The result is byte-identical to
FastChat's `template.format(**kwargs)`. Project-written prompts (judge_prompts/*.jsonl) are Jinja already.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2


class PromptError(ValueError):
    """A judge prompt file that cannot be used; the message names the file and the prompt."""


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
    try:
        name, system, user = row["name"], row["system_prompt"], row["prompt_template"]
    except KeyError as exc:
        raise PromptError(f"{source}: judge prompt is missing the field {exc.args[0]!r}") from exc
    if official:
        # Official system prompts have no fields; they are still Jinja-escaped so braces stay literal.
        system, user = format_string_to_jinja(system), format_string_to_jinja(user)
    try:
        return JudgePrompt(
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


def load_judge_prompts(path: str | Path, *, official: bool) -> dict[str, JudgePrompt]:
    """Load a judge prompt JSONL file (FastChat schema). `official=True`: templates are `str.format`."""
    path = Path(path)
    prompts: dict[str, JudgePrompt] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read judge prompts ({exc.strerror})") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        prompt = _build(row, f"{path}:{lineno}", official)
        prompts[prompt.name] = prompt
    return prompts
