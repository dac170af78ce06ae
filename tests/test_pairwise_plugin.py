"""Several models in one run, pairwise judging through the plugin, FastChat export and import."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import requires, run_plugin, strip_timing
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytestmark = requires("openai")  # every run here calls an OpenAI-compatible endpoint


MODELS = ("alpha", "beta", "gamma")
STRENGTH = {"alpha": 0, "beta": 1, "gamma": 2}


def _judge(body: dict[str, Any]) -> str:
    """Candidates answer naming themselves; the judge prefers the stronger model, except on a few
    questions (by hash) where it calls a tie; a single-answer prompt gets a rating by strength."""
    prompt = body["messages"][-1]["content"]
    if body["model"] in MODELS:
        return f"{body['model']} answers: {prompt[:40]}"
    named = re.findall(r"\b(alpha|beta|gamma) answers:", prompt)
    if not named:  # the one-token preflight call
        return "OK"
    everything = " ".join(m["content"] for m in body["messages"])
    if "[[A]]" not in everything:  # a single-answer prompt
        return f"Fine.\n\nRating: [[{4 + 2 * STRENGTH[named[-1]]}]]"
    first, second = named[0], named[-1]  # assistant A's answer comes first, B's last
    if hashlib.sha256(prompt.encode()).digest()[0] % 5 == 0:
        return "Both are equally good. [[C]]"
    return "Comparison done. [[A]]" if STRENGTH[first] > STRENGTH[second] else "Comparison done. [[B]]"


@pytest.fixture
def server():
    with FakeOpenAIServer(reply=_judge, model_ids=(*MODELS, "judge"), max_requests=5000) as srv:
        yield srv


def _args(
    server: FakeOpenAIServer, shared_data: Path, tmp_path: Path, *extra: str, cache: str = "cache"
) -> list[str]:
    return [
        *(f"--mtbench-model=openai/{m}" for m in MODELS),
        f"--mtbench-model-base-url={server.base_url}",
        "--mtbench-judge=openai/judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / cache}",
        *extra,
    ]


def _run_and_export(tmp_path: Path, args: list[str], report: Path, export: Path) -> None:
    """A run that writes its JSON report and the FastChat files the next run starts from."""
    proc = run_plugin(tmp_path, *args, f"--mtbench-report={report}", f"--mtbench-export={export}")
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_several_models_get_a_column_each_and_the_first_is_gated(
    server, shared_data: Path, tmp_path: Path
) -> None:
    report_path = tmp_path / "r.json"
    proc = run_plugin(
        tmp_path, *_args(server, shared_data, tmp_path, "-k", "writing", f"--mtbench-report={report_path}")
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    report = json.loads(report_path.read_text())
    assert {spec: s["overall"]["score"] for spec, s in report["models"].items()} == {
        "openai/alpha": 4, "openai/beta": 6, "openai/gamma": 8,
    }  # fmt: skip
    assert report["overall"] == 4 and report["run"]["model"] == "openai/alpha"
    assert len(report["questions"]) == 30  # 10 questions x 3 models
    header = next(
        line for line in proc.stdout.splitlines() if line.startswith("category") and "alpha" in line
    )
    assert header.split()[1:] == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_pairwise_all_pairs_win_rates_ratings_and_export(
    server, shared_data: Path, tmp_path: Path, workers: str
) -> None:
    report_path, export = tmp_path / f"r{workers}.json", tmp_path / f"export{workers}"
    proc = run_plugin(
        tmp_path,
        *_args(
            server, shared_data, tmp_path, "--mtbench-mode=pairwise", "-k", "writing or coding",
            f"--mtbench-report={report_path}", f"--mtbench-export={export}", "-n", workers,
        ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads(report_path.read_text())
    pairwise = report["pairwise"]
    assert pairwise["n_pairs"] == 20 * 2 * 3 and pairwise["n_unparsable"] == 0  # questions x turns x pairs
    overall = {
        spec: next(r for r in rows if r["group"] == "overall") for spec, rows in pairwise["win_rates"].items()
    }
    assert overall["openai/gamma"]["losses"] == 0 and overall["openai/alpha"]["wins"] == 0
    assert (
        overall["openai/gamma"]["win_rate"]
        > overall["openai/beta"]["win_rate"]
        > overall["openai/alpha"]["win_rate"]
    )
    for spec, row in overall.items():  # order-dependent ties (by prompt hash) make some pairs inconsistent
        mine = [r for r in pairwise["results"] if spec in (r["model_a"], r["model_b"])]
        assert row["consistency_rate"] == pytest.approx(sum(r["consistent"] for r in mine) / len(mine))
        assert 0.5 < row["consistency_rate"] < 1
    assert [r["model"] for r in pairwise["ratings"]["ratings"]] == [
        "openai/gamma",
        "openai/beta",
        "openai/alpha",
    ]
    assert "ratings (Bradley-Terry" in proc.stdout and "pairwise against every other model" in proc.stdout
    # FastChat's layout, read back as FastChat reads it
    answers = (export / "model_answer" / "alpha.jsonl").read_text().splitlines()
    assert len(answers) == 20 and json.loads(answers[0])["choices"][0]["turns"][0].startswith("alpha answers")
    rows = [
        json.loads(line) for line in (export / "model_judgment" / "judge_pair.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 120 and {
        "question_id",
        "model_1",
        "model_2",
        "g1_winner",
        "g2_winner",
        "judge",
        "turn",
    } <= set(rows[0])
    assert report["fastchat"]["export"]["pair_rows"] == 120


def test_pairwise_against_a_baseline_model_gates_the_win_rate(
    server, shared_data: Path, tmp_path: Path
) -> None:
    junit = tmp_path / "junit.xml"
    proc = run_plugin(
        tmp_path,
        *_args(
            server, shared_data, tmp_path, "--mtbench-mode=pairwise", "--mtbench-baseline-model=openai/beta",
            "--mtbench-threshold=win_rate=0.5", "-k", "writing", f"--junitxml={junit}",
        ),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:]  # alpha loses to beta: its gate fails, gamma's passes
    assert "mtbench::win_rate[openai/alpha]" in proc.stdout
    xml = junit.read_text()
    assert 'name="win_rate[openai/alpha]"' in xml and 'name="win_rate[openai/gamma]"' in xml
    assert xml.count("<failure") == 1


def test_export_then_import_gives_identical_scores_without_the_judge(
    server, shared_data: Path, tmp_path: Path
) -> None:
    first, export = tmp_path / "first.json", tmp_path / "export"
    args = _args(server, shared_data, tmp_path, "-k", "coding")
    _run_and_export(tmp_path, args, first, export)
    judgments = export / "model_judgment" / "judge_single.jsonl"
    assert len(judgments.read_text().splitlines()) == 60  # 3 models x 10 questions x 2 turns
    before = server.request_count
    again = tmp_path / "again.json"
    fresh = _args(server, shared_data, tmp_path, "-k", "coding", cache="fresh")
    proc = run_plugin(
        tmp_path, *fresh, f"--mtbench-import-judgments={judgments}", f"--mtbench-report={again}"
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    judged = [b for b in server.requests[before:] if b["model"] == "judge" and b.get("max_tokens") != 1]
    assert judged == []  # every judgment came from the imported file (the preflight call is not one)
    a, b = json.loads(first.read_text()), json.loads(again.read_text())
    assert strip_timing(a["models"]) == strip_timing(b["models"])
    assert b["fastchat"]["import"]["reusable"] == 60 and b["fastchat"]["import"]["differing"] == 0


def test_replaying_exported_answers_scores_them_like_generating_them(
    server, shared_data: Path, tmp_path: Path
) -> None:
    first, export = tmp_path / "first.json", tmp_path / "export"
    args = _args(server, shared_data, tmp_path, "-k", "coding or writing")
    _run_and_export(tmp_path, args, first, export)
    before = len(server.requests)
    replayed = tmp_path / "replayed.json"
    proc = run_plugin(
        tmp_path,
        f"--mtbench-model=replay/{export / 'model_answer' / 'gamma.jsonl'}",
        "--mtbench-judge=openai/judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'replay-cache'}",
        "-k",
        "coding or writing",
        f"--mtbench-report={replayed}",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert not [b for b in server.requests[before:] if b["model"] in MODELS]  # no candidate was called
    a, b = json.loads(first.read_text()), json.loads(replayed.read_text())
    assert b["overall"] == a["models"]["openai/gamma"]["overall"]["score"] == 8
    generated = {
        q["question_id"]: [t["answer"] for t in q["turns"]]
        for q in a["questions"]
        if q["model"] == "openai/gamma"
    }
    assert {q["question_id"]: [t["answer"] for t in q["turns"]] for q in b["questions"]} == generated


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
def test_several_models_in_process_and_under_xdist_agree(server, shared_data: Path, tmp_path: Path) -> None:
    reports = []
    for workers in ("0", "2"):
        path = tmp_path / f"r{workers}.json"
        args = _args(
            server, shared_data, tmp_path, "-k", "writing or math", f"--mtbench-report={path}", "-n", workers,
            cache=workers,
        )  # fmt: skip
        assert run_plugin(tmp_path, *args).returncode == 0
        reports.append(json.loads(path.read_text()))
    assert strip_timing(reports[0]) == strip_timing(reports[1])
    assert len(reports[0]["questions"]) == 60 and set(reports[0]["models"]) == {f"openai/{m}" for m in MODELS}
