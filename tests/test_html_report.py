"""The HTML report and the radar chart: parsed against the JSON report, then opened in headless Chromium.

The runs are real plugin runs (fake candidates, a judge whose ratings vary with the prompt); several
models side by side are several runs' reports given to the HTML writer together.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from conftest import run_plugin
from pytest_mtbench.questions import CATEGORIES
from pytest_mtbench.records import RunReport
from pytest_mtbench.reports import html, radar
from pytest_mtbench.testing import browser as chromium

TEN_MODELS = ("fake/echo", "fake/silent", *(f"fake/judge-{n}" for n in range(1, 9)))
HOSTILE = '<script>window.__pwned = 1</script></textarea></pre><img src=x onerror="window.__pwned = 2">&amp;'
SVG = "{http://www.w3.org/2000/svg}"


# ---- runs ---------------------------------------------------------------------------------------
def _run(cwd: Path, data: Path, model: str, *extra: str) -> Path:
    """One plugin run on all 80 questions; returns its JSON report."""
    report = cwd / f"{model.replace('/', '-')}.json"
    proc = run_plugin(
        cwd,
        f"--mtbench-model={model}",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={data}",
        f"--mtbench-cache={cwd / 'cache'}",
        f"--mtbench-report={report}",
        "-q",
        *extra,
    )
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """80 questions, one model, with gates; JSON, HTML, SVG and PNG written by the same run."""
    out = tmp_path_factory.mktemp("full")
    # The PNG needs the plot extra; without it the rest of the run's files are still checked.
    suffixes = ("html", "svg", "png") if importlib.util.find_spec("matplotlib") else ("html", "svg")
    paths = {suffix: out / f"report.{suffix}" for suffix in suffixes}
    report = _run(
        out,
        shared_data,
        "fake/echo",
        *(f"--mtbench-report={p}" for p in paths.values()),
        "--mtbench-threshold=overall=3",
        "--mtbench-threshold=coding=9.5",
    )
    return {"json": report, **paths}


@pytest.fixture(scope="module")
def model_runs(build_shared: Callable, shared_data: Path) -> list[Path]:
    """The JSON reports of ten models on the 80 questions (built once per test run, shared by workers)."""

    def build(root: Path) -> Path:
        if (root / "done").exists():
            return root
        root.mkdir(parents=True, exist_ok=True)
        for model in TEN_MODELS:  # one after the other: runs in this process share its working directory
            _run(root, shared_data, model)
        (root / "done").write_text("")
        return root

    root = build_shared(build, "html-ten-models")
    return [root / f"{model.replace('/', '-')}.json" for model in TEN_MODELS]


# ---- reading a page back ------------------------------------------------------------------------
class Page(HTMLParser):
    """What the tests read from a report page: questions and their scores, tables, the radar, texts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.questions: dict[int, dict[str, Any]] = {}
        self.current: int | None = None
        self.series: list[str] = []
        self.axes: list[str] = []
        self.texts: dict[str, list[str]] = {}  # class of a <pre> -> its texts
        self.rows: dict[tuple[str, str], list[str]] = {}  # (table class, category) -> cell texts
        self.scripts = 0
        self._pre: str | None = None
        self._table: str | None = None
        self._row: tuple[str, str] | None = None
        self._cell: list[str] | None = None
        self._buffer: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "details" and "question" in classes:
            self.current = int(a["data-qid"])
            self.questions[self.current] = {"category": a["data-category"], "chips": {}}
        elif tag == "span" and "score" in classes and "data-turn" in a and self.current is not None:
            chips = self.questions[self.current]["chips"]
            chips[(int(a["data-model"]), int(a["data-turn"]))] = a["data-score"]
        elif tag == "g" and "series" in classes:
            self.series.append(a["data-label"])
        elif tag == "line" and "axis" in classes:
            self.axes.append(a["data-category"])
        elif tag == "pre":
            self._pre, self._buffer = (classes or [""])[0], []
        elif tag == "table":
            self._table = (classes or [""])[0]
        elif tag == "tr" and self._table and "data-category" in a:
            self._row = (self._table, a["data-category"])
            self.rows[self._row] = []
        elif tag in ("td", "th") and self._row:
            self._cell = []
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre is not None:
            self.texts.setdefault(self._pre, []).append("".join(self._buffer))
            self._pre = None
        elif tag == "td" and self._row and self._cell is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._buffer.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _json_scores(report: dict) -> dict[int, dict[int, Any]]:
    return {q["question_id"]: {t["turn"]: t["score"] for t in q["turns"]} for q in report["questions"]}


def _assert_scores_match(page: Page, reports: list[dict]) -> None:
    """Every question of every report is on the page, every turn's score equal to the JSON's."""
    wanted = {q["question_id"] for r in reports for q in r["questions"]}
    assert set(page.questions) == wanted
    for model, report in enumerate(reports):
        for qid, turns in _json_scores(report).items():
            for turn, score in turns.items():
                shown = page.questions[qid]["chips"][(model, turn)]
                if score is None:
                    assert shown == "", (model, qid, turn)
                else:
                    assert float(shown) == score and type(json.loads(shown)) is type(score), (qid, turn)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# ---- the page, parsed ---------------------------------------------------------------------------
def test_full_run_page_holds_every_question_with_the_json_scores(full_run: dict[str, Path]) -> None:
    report = json.loads(full_run["json"].read_text())
    page = Page(full_run["html"].read_text(encoding="utf-8"))
    assert len(page.questions) == 80
    _assert_scores_match(page, [report])
    scores = [t["score"] for q in report["questions"] for t in q["turns"]]
    assert len(set(scores)) >= 8  # the judge's ratings vary: equal scores are not a coincidence
    for qid, entry in page.questions.items():
        assert entry["category"] == next(
            q["category"] for q in report["questions"] if q["question_id"] == qid
        )
    # The score table: per category scored, turn 1, turn 2, score, interval, threshold and gate.
    for name in [*CATEGORIES, "overall"]:
        row = report["categories"][name] if name != "overall" else report["overall_detail"]
        cells = page.rows[("scores", name)]
        assert cells[:4] == [
            name,
            f"{row['n_scored']}/{row['n_scored'] + row['n_unscored']}",
            f"{row['turn_1']:.2f}",
            f"{row['turn_2']:.2f}",
        ]
        assert cells[4:6] == [f"{row['score']:.2f}", f"{row['ci_low']:.2f} to {row['ci_high']:.2f}"]
    assert page.rows[("scores", "coding")][6:8] == ["9.5", "FAIL"]
    assert page.rows[("scores", "overall")][6:8] == ["3", "PASS"]
    # Both turns' questions, answers, judgments and the prompts as sent; references for math & co.
    questions = {t["question"] for q in report["questions"] for t in q["turns"]}
    assert set(page.texts["question-text"]) == questions
    assert sorted(page.texts["answer"]) == sorted(
        t["answer"] for q in report["questions"] for t in q["turns"]
    )
    judgments = [j for q in report["questions"] for t in q["turns"] for j in t["judgments"]]
    assert sorted(page.texts["judgment"]) == sorted(j["text"] for j in judgments)
    assert sorted(page.texts["prompt-user"]) == sorted(j["prompt"]["user"] for j in judgments)
    assert sorted(page.texts["prompt-system"]) == sorted(j["prompt"]["system"] for j in judgments)
    referenced = [q for q in report["questions"] if q["category"] in ("math", "reasoning", "coding")]
    assert len(page.texts["reference"]) == 2 * len(referenced) == 60
    for reference in page.texts["reference"]:
        assert any(reference in j["prompt"]["user"] for j in judgments)


def test_the_page_needs_no_network(full_run: dict[str, Path]) -> None:
    text = full_run["html"].read_text(encoding="utf-8")
    for pattern in (r"\ssrc\s*=", r"\shref\s*=", r"<link\b", r"url\(", r"@import", r"<iframe", r"<object"):
        assert not re.search(pattern, text, re.I), pattern
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text)
    assert csp and "default-src 'none'" in csp.group(1)
    nonce = re.search(r"script-src 'nonce-([0-9a-f]+)'", csp.group(1))
    assert nonce and text.count(f'<script nonce="{nonce.group(1)}">') == 1 == text.count("<script")
    assert "<svg" in text and "<style>" in text  # the chart and the styles are inline


def _hostile_report(path: Path) -> RunReport:
    report = RunReport.read(path)
    turn = report.questions[0].turns[0]
    turn.answer = HOSTILE
    turn.question = HOSTILE
    turn.judgments[0].text = HOSTILE + "\nRating: [[3]]"
    report.questions[1].error = HOSTILE
    report.run.model = "fake/<b>bold</b>"
    return report


def test_hostile_text_is_shown_as_text(full_run: dict[str, Path]) -> None:
    text = html.render([_hostile_report(full_run["json"])])
    for raw in ("<script>window", "</textarea>", "<img src=x", "<b>bold</b>", "</pre><img"):
        assert raw not in text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;/textarea&gt;" in text
    assert "&amp;amp;" in text  # an entity in model text stays text, escaped once more
    page = Page(text)
    assert HOSTILE in page.texts["answer"] and HOSTILE in page.texts["question-text"]
    assert HOSTILE + "\nRating: [[3]]" in page.texts["judgment"]
    assert page.scripts == 1


# ---- the radar chart ----------------------------------------------------------------------------
def test_radar_svg_file(full_run: dict[str, Path]) -> None:
    report = RunReport.read(full_run["json"])
    root = ElementTree.fromstring(full_run["svg"].read_text(encoding="utf-8"))
    assert root.tag == f"{SVG}svg"
    assert (root.get("width"), root.get("height")) == ("560", str(560 + radar.LEGEND_ROW + 10))
    assert root.get("viewBox") == f"0 0 560 {560 + radar.LEGEND_ROW + 10}"
    axes = [e for e in root.iter(f"{SVG}line") if e.get("class") == "axis"]
    assert [a.get("data-category") for a in axes] == list(CATEGORIES)
    (series,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert series.get("data-label") == "fake/echo"
    # The polygon's vertices are the category scores on their axes.
    polygon = series.find(f"{SVG}polygon")
    assert polygon is not None
    points = [tuple(map(float, p.split(","))) for p in polygon.get("points", "").split()]
    geometry = radar.RadarGeometry(tuple(CATEGORIES))
    for (x, y), name in zip(points, CATEGORIES, strict=True):
        ex, ey = geometry.point(CATEGORIES.index(name), report.categories[name].score or 0)
        assert abs(x - ex) < 0.06 and abs(y - ey) < 0.06


def test_radar_png_file(full_run: dict[str, Path]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -e '.[test]'")
    report = RunReport.read(full_run["json"])
    assert _png_size(full_run["png"].read_bytes()) == (radar.PNG_SIZE, radar.PNG_SIZE)
    stats = chromium.image_stats(full_run["png"].read_bytes())
    assert (
        stats.ink > 0.02
        and chromium.pixels_near(full_run["png"].read_bytes(), _rgb(radar.colour(0)), 30) > 500
    )
    figure = radar.figure(radar.radar_axes([report]), radar.radar_series([report]))
    polar = figure.axes[0]
    assert [t.get_text() for t in polar.get_xticklabels()] == list(CATEGORIES)
    assert len(polar.lines) == 1


def test_radar_geometry() -> None:
    geometry = radar.RadarGeometry(tuple(CATEGORIES), size=500, margin=50)
    assert geometry.point(0, 10) == pytest.approx((250, 50))  # the first axis points up
    assert geometry.point(2, 10) == pytest.approx((450, 250))  # a quarter turn clockwise: right
    assert geometry.point(4, 5) == pytest.approx((250, 350))  # half way down the bottom axis
    assert geometry.point(6, 0) == pytest.approx((250, 250))  # 0 is the centre
    assert geometry.point(1, 99) == geometry.point(1, 10)  # clamped to the rim
    assert [geometry.label_position(i)[2] for i in (0, 2, 4, 6)] == ["middle", "start", "middle", "end"]
    series = radar.RadarSeries("m", {"writing": 10.0, "roleplay": None})
    assert geometry.polygon(series)[1] == pytest.approx((250, 250))  # no score: drawn at the centre
    assert radar.colour(0) != radar.colour(1) and radar.colour(10) == radar.colour(0)


def test_baseline_run_draws_both_polygons_and_the_changes(
    full_run: dict[str, Path], shared_data: Path, tmp_path: Path
) -> None:
    page_path, chart = tmp_path / "b.html", tmp_path / "b.svg"
    new = _run(
        tmp_path,
        shared_data,
        "fake/judge-3",
        f"--mtbench-baseline={full_run['json']}",
        f"--mtbench-report={page_path}",
        f"--mtbench-report={chart}",
    )
    report = json.loads(new.read_text())
    comparisons = {row["name"]: row for row in report["baseline"]["comparisons"]}
    assert len(comparisons) == 9
    page = Page(page_path.read_text(encoding="utf-8"))
    assert page.series == ["baseline", "fake/judge-3"]
    for name, row in comparisons.items():
        cells = page.rows[("scores", name)]
        assert cells[8:12] == [
            f"{row['baseline_score']:.2f}",
            f"{row['difference']:+.2f}",
            f"{row['low']:+.2f} to {row['high']:+.2f}",
            row["verdict"],
        ]
    root = ElementTree.fromstring(chart.read_text(encoding="utf-8"))
    labels = [g.get("data-label") for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert labels == ["baseline", "fake/judge-3"]


def test_several_models_side_by_side(model_runs: list[Path]) -> None:
    reports = [json.loads(p.read_text()) for p in model_runs[:3]]
    text = html.render([RunReport.read(p) for p in model_runs[:3]])
    page = Page(text)
    assert page.series == ["fake/echo", "fake/silent", "fake/judge-1"]
    assert page.axes == list(CATEGORIES)
    _assert_scores_match(page, reports)
    overall = [r["overall"] for r in reports]
    assert len(set(overall)) == 3  # three models that really differ
    for name in [*CATEGORIES, "overall"]:
        cells = page.rows[("matrix", name)]
        expected = [
            (r["categories"][name] if name != "overall" else r["overall_detail"])["score"] for r in reports
        ]
        assert [c.split()[0] for c in cells[1:]] == [f"{s:.2f}" for s in expected]


def test_png_report_needs_the_plot_extra_at_start_up(
    pytester: pytest.Pytester, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        "--mtbench-report=radar.png",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [
        "ERROR: --mtbench-report=radar.png: matplotlib is not installed; it is needed to draw the PNG "
        "radar chart (or write PATH.svg): pip install 'pytest-mtbench[plot]'"
    ]


# ---- in a real browser --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    reason = chromium.missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"no browser for the HTML report tests: {reason}")
        pytest.skip(reason)
    with chromium.headless_chromium(1280, 900) as driver:
        yield driver


def _expand_first_question(driver: Any) -> None:
    """Click a question's row, as a reader would, and check that its answers show."""
    from selenium.webdriver.common.by import By

    question = driver.find_element(By.CSS_SELECTOR, "details.question")
    summary = question.find_element(By.CSS_SELECTOR, "summary")
    answer = question.find_element(By.CSS_SELECTOR, "pre.answer")
    assert question.get_attribute("open") is None and not answer.is_displayed()
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", summary)
    summary.click()
    assert question.get_attribute("open") is not None
    assert answer.is_displayed() and answer.size["height"] > 10


def _check_rendered(driver: Any, n_series: int) -> bytes:
    """The page as drawn: not blank, the radar with one coloured polygon per series; returns the image."""
    from selenium.webdriver.common.by import By

    shot = driver.get_screenshot_as_png()
    stats = chromium.image_stats(shot)
    assert (stats.width, stats.height) == (1280, 900)
    assert stats.colours > 100 and stats.ink > 0.03
    chart = driver.find_element(By.CSS_SELECTOR, "svg.radar")
    assert chart.size["width"] >= 500 and chart.size["height"] >= 500
    polygons = chart.find_elements(By.CSS_SELECTOR, "polygon.series-area")
    assert len(polygons) == n_series
    for polygon in polygons:
        assert polygon.size["width"] > 100 and polygon.size["height"] > 100
    image = chart.screenshot_as_png
    drawn = [chromium.pixels_near(image, _rgb(radar.colour(i)), 25) for i in range(n_series)]
    assert min(drawn) > 40 and drawn[-1] > 200, drawn  # the last polygon drawn is on top of the others
    return shot


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_browser_draws_three_models_and_expands_a_question(
    browser: Any, model_runs: list[Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = tmp_path / "three.html"
    html.write_many([RunReport.read(p) for p in model_runs[:3]], path)
    chromium.open_page(browser, path)
    assert browser.title == "MT-Bench: 3 models judged by fake/judge-varied"
    shot = _check_rendered(browser, 3)
    screenshot = os.environ.get("MTBENCH_SCREENSHOT")
    if screenshot:  # the README's picture: `MTBENCH_SCREENSHOT=docs/html-report.png pytest -k three`
        _save_small_png(shot, Path(screenshot))
    _expand_first_question(browser)
    # The filters run in the page: a category, then a search within it.
    count = browser.find_element(By.ID, "f-count")
    Select(browser.find_element(By.ID, "f-category")).select_by_value("coding")
    assert count.text == "10 of 80 questions"
    shown = [e for e in browser.find_elements(By.CSS_SELECTOR, "details.question") if e.is_displayed()]
    assert {e.get_attribute("data-category") for e in shown} == {"coding"} and len(shown) == 10
    browser.find_element(By.ID, "f-search").send_keys("Fibonacci")  # one coding question's word
    _wait(lambda: count.text == "1 of 80 questions")
    # A score range: the questions where some model's turn was rated 10.
    Select(browser.find_element(By.ID, "f-category")).select_by_value("")
    browser.find_element(By.ID, "f-search").clear()
    browser.execute_script("document.getElementById('f-search').dispatchEvent(new Event('input'))")
    _wait(lambda: count.text == "80 of 80 questions")
    page = Page(path.read_text(encoding="utf-8"))
    tens = sum(any(s and float(s) >= 10 for s in q["chips"].values()) for q in page.questions.values())
    assert 0 < tens < 80
    browser.find_element(By.ID, "f-min").send_keys("10")
    _wait(lambda: count.text == f"{tens} of 80 questions")


def _wait(condition: Callable[[], bool], seconds: float = 5) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the page did not update"
        time.sleep(0.05)


def _save_small_png(png: bytes, path: Path) -> None:
    """A screenshot for the README: quantised to 128 colours, so the checked-in file stays small."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


def test_browser_hostile_text_runs_nothing(browser: Any, full_run: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = tmp_path / "hostile.html"
    html.write(_hostile_report(full_run["json"]), path)
    chromium.open_page(browser, path)
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "img, textarea, b")
    first = browser.find_element(By.CSS_SELECTOR, "details.question pre.answer")
    assert first.get_attribute("textContent") == HOSTILE
    assert browser.find_element(By.ID, "f-count").text == "80 of 80 questions"  # the page's script ran


def test_browser_eighty_questions_ten_models(
    browser: Any, model_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from selenium.webdriver.common.by import By

    path = tmp_path / "ten.html"
    html.write_many([RunReport.read(p) for p in model_runs], path)
    load = chromium.open_page(browser, path)
    size = path.stat().st_size
    with capsys.disabled():
        print(
            f"\nHTML report, 80 questions x 10 models: {size / 1e6:.2f} MB, loaded in {load.seconds:.2f} s "
            f"(load event at {load.load_event_ms:.0f} ms, DOM ready at {load.dom_ready_ms:.0f} ms)"
        )
    assert load.seconds < 30
    assert len(browser.find_elements(By.CSS_SELECTOR, "details.question")) == 80
    chips = browser.find_elements(By.CSS_SELECTOR, "details.question > summary span.score[data-turn]")
    assert len(chips) == 80 * 10 * 2
    _check_rendered(browser, 10)
    _expand_first_question(browser)
