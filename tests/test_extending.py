"""The README's "Development" claims, held to: a backend, a judging mode and a report format are each one
new module plus one registry line. All three are added here from one temporary module (registered for
the test only) and run end to end through the plugin.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_mtbench.backends import _REGISTRY
from pytest_mtbench.modes import MODES
from pytest_mtbench.reports import WRITERS

BACKEND = textwrap.dedent(
    """
    from pytest_mtbench.backends import Capabilities, Completion

    CAPABILITIES = Capabilities(batch_scope="all")


    class ConstantBackend:
        def __init__(self, name):
            self.spec = f"constant/{name}"
            self.name = name

        def identity(self):
            return {"backend": "constant", "model": self.name}

        def chat(self, conversations, params, on_result=None):
            replies = [Completion(text=f"{self.name} says: {c[-1]['content'][:20]}") for c in conversations]
            for index, reply in enumerate(replies):
                if on_result is not None:
                    on_result(index, reply)
            return replies

        def close(self):
            pass


    def create(name, options):
        return ConstantBackend(name)
    """
)

MODE = textwrap.dedent(
    """
    from pytest_mtbench.judge import JudgeRequest, official_judgment
    from pytest_mtbench.modes import GroupJudging, ModeSummary


    class WholeConversationMode:
        name = "whole"

        def judge_models(self, answered, client):
            result = GroupJudging()
            for spec, items in answered.items():
                requests = [
                    JudgeRequest(item.question.question_id, turn, "whole", "[[N]]", f"{turn} {item.answers}")
                    for item in items
                    for turn in range(1, len(item.answers) + 1)
                ]
                for request, reply in zip(requests, client.complete(requests)):
                    key = (spec, request.question_id, request.turn)
                    result.judgments[key] = [official_judgment(request, reply.text, reply.call)]
            return result

        def summarize(self, pairs, context):
            return ModeSummary()


    def create(**options):
        return WholeConversationMode()
    """
)

REPORT = textwrap.dedent(
    """
    def write(report, path):
        lines = ["category,score"] + [f"{name},{row.score}" for name, row in report.categories.items()]
        path.write_text("\\n".join(lines) + "\\n", encoding="utf-8")
    """
)


def test_a_backend_a_mode_and_a_report_format_are_one_module_and_one_registry_line_each(
    pytester: pytest.Pytester, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in (("constant_backend", BACKEND), ("whole_mode", MODE), ("csv_report", REPORT)):
        (pytester.path / f"{name}.py").write_text(text, encoding="utf-8")  # one new file each ...
    monkeypatch.syspath_prepend(str(pytester.path))
    monkeypatch.setitem(_REGISTRY, "constant", ("constant_backend", None))  # ... and one registry line each
    monkeypatch.setitem(MODES, "whole", "whole_mode")
    monkeypatch.setitem(WRITERS, ".csv", "csv_report")
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=constant/parrot",
        "--mtbench-judge=fake/judge-7",
        "--mtbench-mode=whole",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        f"--mtbench-report={pytester.path / 'scores.csv'}",
        "-k",
        "81 or 82 or 91",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*MT-Bench: constant/parrot judged by fake/judge-7*", "writing*4/4*7.00*"])
    assert (pytester.path / "scores.csv").read_text() == "category,score\nwriting,7.0\nroleplay,7.0\n"
    # The answers were the backend's and the judgments the mode's, both cached like any other.
    assert len(list((pytester.path / "cache" / "answer").rglob("*.json"))) == 6
    assert len(list((pytester.path / "cache" / "judgment").rglob("*.json"))) == 6
