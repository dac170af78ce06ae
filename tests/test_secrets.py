"""Credentials never leave the process: a sentinel API key and a base-URL password, grepped in every artefact.

Candidate and judge are both `openai/` models behind the loopback server, reached through a base URL that
carries a user and a password, with the key in OPENAI_API_KEY. The server echoes the key, the password
(plain and percent-encoded) and the Basic token back in its error messages. Three runs, each as loud as
pytest gets (`-vv -l --tb=long --log-level=DEBUG`, live logging, a DEBUG log file, JUnit, JSON and
Markdown reports, the GitHub step summary): one whose first call fails for good (so its error is shown),
one that passes (so every report and cache file is written), and one the preflight refuses (401). Every
byte of stdout, stderr, every written file and every cache file is searched for each secret form.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from conftest import run_plugin
from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply

pytest.importorskip("openai")

KEY = "sk-sentinel-KEY-7f3a9c1e5b2d4680"
USER = "mtbench-user"
PASSWORD = "pw-sentinel/9d8c@7b6a"  # '/' and '@' make the URL's percent-encoded form differ from it
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
ENCODED_PASSWORD = quote(PASSWORD, safe="")
SECRETS = {"key": KEY, "password": PASSWORD, "encoded password": ENCODED_PASSWORD, "basic token": TOKEN}
ECHO = f"credentials rejected: key={KEY} password={PASSWORD} ({ENCODED_PASSWORD}) auth=Basic {TOKEN}"
LOUD = ("-vv", "-l", "--tb=long", "--log-level=DEBUG", "-o", "log_cli=true", "-o", "log_cli_level=DEBUG")


def reply(body: dict[str, Any]) -> str:
    if body["model"] == "candidate":
        return f"An answer of {len(body['messages'])} messages."
    return judge_like_reply(1 + len(body["messages"][-1]["content"]) % 10)


def secret_url(server: FakeOpenAIServer) -> str:
    return server.base_url.replace("http://", f"http://{USER}:{ENCODED_PASSWORD}@")


def artefacts(tmp_path: Path, proc: Any) -> dict[str, str]:
    """Everything a run left behind, by name: its output, every file it wrote, every cache file."""
    found = {"stdout": proc.stdout, "stderr": proc.stderr}
    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        found[str(path.relative_to(tmp_path))] = path.read_bytes().decode("utf-8", errors="replace")
    return found


def leaks(found: dict[str, str]) -> list[str]:
    return [
        f"{what} in {name}"
        for name, text in found.items()
        for what, secret in SECRETS.items()
        if secret in text
    ]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_no_secret_in_any_artefact_of_a_loud_run(workers: str, shared_data: Path, tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": KEY, "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md")}

    def run(server: FakeOpenAIServer, name: str, *extra: str) -> Any:
        out = tmp_path / name
        out.mkdir()
        return run_plugin(
            out,
            "--mtbench-model=openai/candidate",
            f"--mtbench-model-base-url={secret_url(server)}",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={secret_url(server)}",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / 'cache'}",
            f"--mtbench-report={out / 'report.json'}",
            f"--mtbench-report={out / 'report.md'}",
            f"--junitxml={out / 'junit.xml'}",
            f"--log-file={out / 'debug.log'}",
            "--mtbench-retries=2",
            "-k",
            "81 or 91",
            "-n",
            workers,
            *LOUD,
            *extra,
            env=env,
        )

    # The two preflight calls (candidate and judge) fail, as do both first calls (turn 1 of each question)
    # on all 3 attempts.
    faults = [("500", None, None, ECHO)] * (2 + 6)
    with FakeOpenAIServer(reply=reply, faults=faults, model_ids=("candidate", "fake-judge")) as server:
        failing = run(server, "failing")
        passing = run(server, "passing")
        public_url = server.base_url
        # Every request carried both credentials, so the server did see what must never be shown.
        assert {h.get("authorization") for h in server.request_headers} == {f"Bearer {KEY}"}
        assert {h.get("proxy-authorization") for h in server.request_headers} == {f"Basic {TOKEN}"}
    with FakeOpenAIServer(unauthorized=True) as server:
        refused = run(server, "refused")

    assert failing.returncode == 1, failing.stdout[-3000:]
    assert "failed after 3 attempts" in failing.stdout and "credentials rejected: key=***" in failing.stdout
    assert passing.returncode == 0, passing.stdout[-3000:]
    assert refused.returncode == 4 and "refused the API key" in refused.stderr
    found: dict[str, str] = {}
    for name, proc in (("failing", failing), ("passing", passing), ("refused", refused)):
        found.update({f"{name}: {k}": v for k, v in artefacts(tmp_path / name, proc).items()})
    cache = {
        str(path.relative_to(tmp_path)): path.read_text()
        for path in (tmp_path / "cache").rglob("*")
        if path.is_file()
    }
    found.update(cache)
    found["step-summary.md"] = (tmp_path / "step-summary.md").read_text()
    assert leaks(found) == []

    # The search covered real artefacts: DEBUG records of the HTTP stack, the failure, reports, the cache.
    assert "HTTP Request: POST http://127.0.0.1" in found["passing: debug.log"]
    assert "credentials rejected: key=***" in found["failing: debug.log"]
    assert "failed after 3 attempts" in found["failing: junit.xml"]
    assert "mtbench_turn_1_score" in found["passing: junit.xml"]
    report = json.loads(found["passing: report.json"])
    assert len(report["questions"]) == 2 and report["run"]["judge_base_url"] == public_url
    assert "| writing |" in found["passing: report.md"] or "writing" in found["passing: report.md"]
    assert len([name for name in cache if name.endswith(".json")]) == 8  # 4 answers, 4 judgments
