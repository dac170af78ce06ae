"""One base class for every user-facing error of the package, and none defined that nothing raises."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import pytest_mtbench
from pytest_mtbench.errors import MTBenchError

# Exceptions that are not user errors: a question's failure (a test outcome), and internal signals.
NOT_USER_ERRORS = {"MTBenchFailure"}
OPTIONAL = ("torch", "transformers", "openai", "mlflow", "matplotlib", "selenium")


def _package_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(pytest_mtbench.__path__, "pytest_mtbench."):
        if ".testing" in module_info.name:
            continue
        try:
            module = importlib.import_module(module_info.name)
        except ImportError as exc:  # a module of an optional extra
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                continue
            raise
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = value
    return found


def test_every_user_facing_error_is_an_mtbench_error() -> None:
    errors = _package_exceptions()
    assert {"BackendError", "DataError", "SetupError", "ReportError"} <= set(errors)
    outside = sorted(
        n for n, e in errors.items() if not issubclass(e, MTBenchError) and n not in NOT_USER_ERRORS
    )
    assert outside == []


def test_every_error_class_is_raised_somewhere() -> None:
    source = "\n".join(p.read_text() for p in Path(pytest_mtbench.__file__).parent.rglob("*.py"))
    for name in _package_exceptions():
        if name == "MTBenchError":
            continue
        raised = re.search(rf"raise {name}\(|\({name}\)|class \w+\({name}\b|{name}\(\s*$", source, re.M)
        assert raised, f"{name} is defined but never raised"


def test_a_user_error_from_any_module_becomes_one_usage_line(pytester: pytest.Pytester) -> None:
    # A question file that is not JSON Lines: QuestionFileError -> SetupError -> one UsageError line.
    questions = pytester.path / "q.jsonl"
    questions.write_text("not json\n")
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-questions={questions}",
        "--mtbench-no-cache",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "q.jsonl" in errors[0] and "Traceback" not in result.stderr.str()
