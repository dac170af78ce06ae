"""Settings: which source wins (command line, environment, ini, default) for every option, and how the
option table, the help text and the README agree.

Configs are made in-process with `pytester.parseconfig`, once with the plugin's own option registration
and once with `settings.add_options`, and read with `build_settings` (no run, no data needed).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from pytest_mtbench.backends import ModelSpec
from pytest_mtbench.settings import (
    DEFAULT_JUDGE,
    ENVIRONMENT_OPTIONS,
    OPTIONS,
    Option,
    Origin,
    Settings,
    _show,
    add_options,
    build_settings,
)
from pytest_mtbench.stats import OVERALL

pytest_plugins = ["pytester"]

ALL_OPTIONS = OPTIONS + ENVIRONMENT_OPTIONS
MODEL = "--mtbench-model=fake/echo"


@pytest.fixture(autouse=True)
def _no_option_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only what a test sets: a developer's MTBENCH_OFFLINE or progress interval must not decide a row.
    for option in ALL_OPTIONS:
        if option.env:
            monkeypatch.delenv(option.env, raising=False)


class _AddOptions:
    """Registers the options through settings.add_options (the plugin itself is disabled)."""

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        add_options(parser)


@pytest.fixture(params=["plugin", "add_options"])
def make_settings(request: pytest.FixtureRequest, pytester: pytest.Pytester):
    """Settings from command-line args (the ini file and environment are set by the test)."""

    prefix: tuple[str, ...] = ("-p", "no:cacheprovider")
    if request.param == "add_options":
        pytester.plugins.append(_AddOptions())
        prefix += ("-p", "no:mtbench")

    def make(*args: str) -> Settings:
        return build_settings(pytester.parseconfig(*prefix, *args))

    return make


@dataclass(frozen=True)
class Sample:
    """Three valid raw values for one option, one per source; the command line's equals the default
    when the option has one (the case that used to lose against the ini file)."""

    cli: str
    env: str
    ini: str


def _samples(tmp: Path) -> dict[str, Sample]:
    """One row per option that has a value (switches are tested on their own)."""

    def made(name: str, text: str = "x\n") -> str:
        path = tmp / name
        path.write_text(text)
        return str(path)

    def folder(name: str) -> str:
        (tmp / name).mkdir(exist_ok=True)
        return str(tmp / name)

    def published(name: str) -> str:
        # FastChat's data/mt_bench with the published files --mtbench-calibrate needs
        for part in ("model_answer/m.jsonl", "model_judgment/gpt-4_single.jsonl"):
            (tmp / name / part).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name / part).write_text("{}\n")
        return str(tmp / name)

    return {
        "mode": Sample("single", "", "pairwise"),
        "baseline_model": Sample("fake/cli-base", "", "fake/ini-base"),
        "export": Sample(str(tmp / "export-cli"), "", str(tmp / "export-ini")),
        "model_base_url": Sample("http://cli:1/v1", "", "http://ini:1/v1"),
        "judge": Sample(DEFAULT_JUDGE, "fake/judge-5", "fake/judge-3"),
        "judge_base_url": Sample("http://cli:2/v1", "", "http://ini:2/v1"),
        "judge_scoring": Sample("official", "", "constrained"),
        "judge_max_tokens": Sample("2048", "", "64"),
        "judge_repeats": Sample("1", "", "3"),
        "judge_drift": Sample("0", "", "40"),
        "data": Sample(folder("data-cli"), folder("data-env"), folder("data-ini")),
        "questions": Sample(made("q-cli.jsonl"), "", made("q-ini.jsonl")),
        "references": Sample("gpt-4", "", "gpt-4-0125-preview"),
        "judge_prompts": Sample(made("p-cli.jsonl"), "", made("p-ini.jsonl")),
        "chat_template": Sample(made("cli.jinja"), "", made("ini.jinja")),
        "max_new_tokens": Sample("1024", "", "128"),
        "seed": Sample("0", "", "7"),
        "baseline": Sample(made("b-cli.json"), "", made("b-ini.json")),
        "calibrate": Sample(published("published-cli"), "", ""),
        "calibrate_turns": Sample("160", "", "40"),
        "calibration_out": Sample("mtbench-calibration.json", "", str(tmp / "calibration-ini.json")),
        "calibration": Sample(made("c-cli.json"), "", made("c-ini.json")),
        "confidence": Sample("0.95", "", "0.9"),
        "cache": Sample(str(tmp / "cache-cli"), "", str(tmp / "cache-ini")),
        "concurrency": Sample("32", "", "4"),
        "timeout": Sample("120", "", "9.5"),
        "retries": Sample("6", "", "2"),
        "batch_size": Sample("16", "", "3"),
        "device": Sample("auto", "cpu", "cuda:1"),
        "judge_call": Sample("auto", "reasoning", "official"),
        "judge_reasoning_effort": Sample("low", "", "high"),
        "judge_thinking_budget": Sample("100", "", "200"),
        "thinking_budget": Sample("64", "", "32"),
        "think_markers": Sample("<think>,</think>", "", "<r>,</r>"),
        "model_call": Sample("official", "", "auto"),
        "model_revision": Sample("step-1", "step-2", "step-3"),
        "vllm": Sample("/opt/cli/vllm", "/opt/env/vllm", "/opt/ini/vllm"),
        "vllm_args": Sample("--dtype half", "--dtype float16", "--dtype bfloat16"),
        "vllm_start_timeout": Sample("", "60", ""),
        "progress_interval": Sample("", "0.5", ""),
    }


SWITCHES = [option for option in OPTIONS if option.action == "store_true"]
REPEATABLE = {"thresholds", "reports", "margin"}
VALUED = [option for option in ALL_OPTIONS if option.action == "store"]


def _parsed(option: Option, text: str) -> Any:
    """The setting a raw text gives (a parsed model spec stands in the settings by its text)."""
    value = option.parse(text, Origin("test"))
    return value.text if isinstance(value, ModelSpec) else value


def _ini(pytester: pytest.Pytester, **values: str) -> None:
    lines = ["[pytest]"]
    for key, value in values.items():
        lines.append(f"{key} = {value}")
    pytester.makeini("\n".join(lines) + "\n")


def test_every_option_has_a_precedence_row(tmp_path: Path) -> None:
    rows = _samples(tmp_path)
    assert {option.setting for option in VALUED} == set(rows)
    for option in VALUED:
        sample = rows[option.setting]
        assert bool(sample.env) == bool(option.env) and bool(sample.ini) == bool(option.ini), option.setting
        assert bool(sample.cli) == bool(option.flag), option.setting
        if option.default is not None and sample.cli:
            assert _parsed(option, sample.cli) == option.default, (
                f"{option.setting}: CLI sample is the default"
            )
        given = [_parsed(option, text) for text in (sample.cli, sample.env, sample.ini) if text]
        assert len(set(given)) == len(given), f"{option.setting}: samples must differ"
        assert all(value != option.default for value in given[1:]), option.setting


@pytest.mark.parametrize("option", VALUED, ids=lambda option: option.setting)
def test_command_line_beats_environment_beats_ini_beats_default(
    option: Option,
    make_settings,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample = _samples(pytester.path)[option.setting]
    # what the option needs beside it to be valid: a model, and for pairwise options the mode
    pairwise = ("--mtbench-mode=pairwise", "--mtbench-model=fake/other")
    needs = {"baseline_model": pairwise, "mode": ("--mtbench-model=fake/other",)}
    model = (MODEL, *needs.get(option.setting, ()))

    def setting(*args: str) -> Any:
        return getattr(make_settings(*model, *args), option.setting)

    if option.ini:
        _ini(pytester, **{option.ini: sample.ini})
    if option.env:
        monkeypatch.setenv(option.env, sample.env)
    if option.flag:
        # The command line wins over both, even when its value is the documented default.
        assert setting(f"{option.flag}={sample.cli}") == _parsed(option, sample.cli)
    if option.env:
        assert setting() == _parsed(option, sample.env)  # the environment beats the ini file
        monkeypatch.delenv(option.env)
    if option.ini:
        assert setting() == _parsed(option, sample.ini)  # the ini file beats the default
        _ini(pytester)
    assert setting() == option.default


def test_the_model_list_comes_from_one_source(
    make_settings, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeatable --mtbench-model: the command line's list, else MTBENCH_MODEL, else the ini list."""
    _ini(pytester, mtbench_model="fake/ini-a\n    fake/ini-b")
    monkeypatch.setenv("MTBENCH_MODEL", "fake/env")
    assert make_settings(MODEL, "--mtbench-model=fake/b").models == ("fake/echo", "fake/b")
    assert make_settings().models == ("fake/env",)
    monkeypatch.delenv("MTBENCH_MODEL")
    settings = make_settings()
    assert settings.models == ("fake/ini-a", "fake/ini-b") and settings.model == "fake/ini-a"
    with pytest.raises(pytest.UsageError, match="the same model twice"):
        make_settings(MODEL, MODEL)


def test_settings_parse_every_spec_once(make_settings) -> None:
    settings = make_settings(
        "--mtbench-model=fake/echo",
        "--mtbench-model=smollm2",
        "--mtbench-mode=pairwise",
        "--mtbench-baseline-model=openai/base",
        "--mtbench-judge=vllm/Qwen/Qwen3-0.6B",
    )
    assert settings.models == ("fake/echo", "smollm2", "openai/base")  # the texts, as given
    assert [(s.backend, s.name) for s in settings.model_specs] == [
        ("fake", "echo"),
        ("hf", "smollm2"),
        ("openai", "base"),
    ]
    assert settings.baseline_model == "openai/base"
    assert settings.judge == "vllm/Qwen/Qwen3-0.6B" and settings.judge_spec.backend == "vllm"
    default = make_settings("--mtbench-model=fake/echo").judge_spec
    assert (default.text, default.backend) == (make_settings("--mtbench-model=fake/echo").judge, "openai")


def test_pairwise_takes_the_baseline_model_among_the_models(make_settings) -> None:
    settings = make_settings(MODEL, "--mtbench-mode=pairwise", "--mtbench-baseline-model=fake/base")
    assert settings.models == ("fake/echo", "fake/base") and settings.baseline_model == "fake/base"


@pytest.mark.parametrize("option", SWITCHES, ids=lambda option: option.setting)
def test_switches(
    option: Option, make_settings, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert getattr(make_settings(MODEL), option.setting) is False
    assert getattr(make_settings(MODEL, option.flag), option.setting) is True
    if option.ini:
        _ini(pytester, **{option.ini: "true"})
        assert getattr(make_settings(MODEL), option.setting) is True
    if option.env:
        monkeypatch.setenv(option.env, "0")  # the environment switches off what the ini switched on
        assert getattr(make_settings(MODEL), option.setting) is False
        assert getattr(make_settings(MODEL, option.flag), option.setting) is True  # the flag still wins
        monkeypatch.setenv(option.env, "yes")
        assert getattr(make_settings(MODEL), option.setting) is True


def test_empty_environment_variable_counts_as_unset(make_settings, pytester, monkeypatch) -> None:
    _ini(pytester, mtbench_judge="fake/judge-3")
    monkeypatch.setenv("MTBENCH_JUDGE", "")
    assert make_settings(MODEL).judge == "fake/judge-3"


def test_thresholds_and_margins_merge_by_name_command_line_last(make_settings, pytester) -> None:
    pytester.makeini(
        "[pytest]\nmtbench_thresholds =\n    coding=5, math=6\n    overall=6.5\n"
        "mtbench_margin =\n    0.3\n    coding=1\n"
    )
    settings = make_settings(MODEL, "--mtbench-threshold=coding=7", "--mtbench-margin=0.5")
    assert settings.thresholds == {"coding": 7.0, "math": 6.0, "overall": 6.5}
    # The bare --mtbench-margin=0.5 equals the default and still beats the ini's 0.3.
    assert settings.margin == 0.5 and settings.margins == {"coding": 1.0}
    assert settings.margin_for("coding") == 1.0 and settings.margin_for("math") == 0.5

    settings = make_settings(MODEL)
    assert settings.margin == 0.3 and settings.margin_for("writing") == 0.3
    _ini(pytester)
    settings = make_settings(MODEL)
    assert settings.margin == 0.5 and settings.margins == {} and settings.thresholds == {}


def test_command_line_reports_replace_the_ini_list(make_settings, pytester) -> None:
    pytester.makeini("[pytest]\nmtbench_report =\n    out/a.json\n    out/a.md\n")
    assert make_settings(MODEL).reports == (
        str(pytester.path / "out/a.json"),
        str(pytester.path / "out/a.md"),
    )
    assert make_settings(MODEL, "--mtbench-report=b.md").reports == ("b.md",)
    two = make_settings(MODEL, "--mtbench-report=b.md", "--mtbench-report=c/b.json")
    assert two.reports == ("b.md", "c/b.json")


def test_ini_paths_are_relative_to_the_ini_file(make_settings, pytester, monkeypatch) -> None:
    (pytester.path / "q.jsonl").write_text("{}\n")
    (pytester.path / "sub").mkdir()
    _ini(pytester, mtbench_questions="q.jsonl", mtbench_cache="cache")
    monkeypatch.chdir(pytester.path / "sub")
    settings = make_settings(MODEL)
    assert settings.questions == str(pytester.path / "q.jsonl")
    assert settings.cache == str(pytester.path / "cache")
    assert make_settings(MODEL, "--mtbench-cache=here").cache == "here"  # command line: from the cwd


def test_native_toml_numbers_and_booleans_plugin_registration(pytester) -> None:
    _native_toml(
        pytester, lambda *args: build_settings(pytester.parseconfig("-p", "no:cacheprovider", *args))
    )


def test_native_toml_numbers_and_booleans(pytester) -> None:
    pytester.plugins.append(_AddOptions())
    _native_toml(
        pytester,
        lambda *args: build_settings(
            pytester.parseconfig("-p", "no:cacheprovider", "-p", "no:mtbench", *args)
        ),
    )


def _native_toml(pytester: pytest.Pytester, make) -> None:
    if pytest.version_tuple < (9, 2):
        pytest.skip("type unions for ini keys need pytest 9.2")
    pytester.makepyprojecttoml(
        "[tool.pytest]\nmtbench_concurrency = 4\nmtbench_timeout = 2.5\nmtbench_strict = true\n"
        'mtbench_judge = "fake/judge-3"\n'
    )
    settings = make(MODEL)
    assert (settings.concurrency, settings.timeout, settings.strict, settings.judge) == (
        4,
        2.5,
        True,
        "fake/judge-3",
    )


def test_no_model_is_a_usage_error_when_called(make_settings) -> None:
    with pytest.raises(pytest.UsageError, match="--mtbench-model"):
        make_settings()


def test_defaults_are_written_once_and_shown_in_help() -> None:
    # The option table is the only place a default is written: Settings has none, help texts are
    # generated from the table ("(default: 32; ini ...)") and never state a number themselves.
    assert all(f.default is MISSING and f.default_factory is MISSING for f in fields(Settings))
    for option in ALL_OPTIONS:
        assert not re.search(r"default\W+\d", option.about), f"{option.setting}: help states its default"
        if option.default is not None and option.default is not False:
            shown = _show(option.default)
            assert option.help.count(f"default: {shown}") == 1, option.setting
        for name in (option.ini, option.env):
            assert name is None or name in option.help


def test_settings_fields_are_the_options() -> None:
    # derived: per-name margins, whether the references were given (not the default), the parsed specs
    filled = {option.setting for option in ALL_OPTIONS} | {
        "margins",
        "references_given",
        "model_specs",
        "judge_spec",
    }
    assert {f.name for f in fields(Settings)} == filled


def test_readme_rows_show_defaults_and_sources() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {
        line.split("`")[1].split("=")[0]: line for line in readme.splitlines() if line.startswith("| `--")
    }
    for option in OPTIONS:
        row = rows.get(option.flag)
        assert row is not None, f"README has no row for {option.flag}"
        for name in (option.ini, option.env):
            assert name is None or f"`{name}`" in row, f"{option.flag}: README row lacks {name}"
        if option.default not in (None, False):
            shown = _show(option.default)
            assert f"default `{shown}`" in row, f"{option.flag}: README row lacks its default {shown}"


def test_reserved_categories_include_the_overall_gate() -> None:
    from pytest_mtbench.questions import CATEGORIES, RESERVED_CATEGORIES

    assert OVERALL in RESERVED_CATEGORIES
    assert not RESERVED_CATEGORIES & set(CATEGORIES)


def test_references_given_tells_an_explicit_value_from_the_default(make_settings) -> None:
    assert make_settings(MODEL).references_given is False
    assert make_settings(MODEL, "--mtbench-references=gpt-4").references_given is True
