"""The radar chart of category scores: geometry as pure code, drawn as SVG (a template) or PNG (matplotlib).

One polygon per series: one per model when several runs are shown together, or the baseline and this
run when a run was compared with `--mtbench-baseline`. Axes are the official categories in FastChat's
order (then custom ones), from the centre (0) to the rim (10), the first at the top, clockwise.
A category a series has no score for is drawn at 0 and said so in the point's tooltip.

`--mtbench-report=PATH.svg` or `PATH.png` writes the chart alone (PNG needs the `plot` extra:
matplotlib, imported only here and only for PNG).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..questions import CATEGORIES
from ..records import RunReport
from ..stats import category_order
from . import write_text_atomically
from .templating import render

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_SCORE = 10.0
RINGS = (2.0, 4.0, 6.0, 8.0, 10.0)
SVG_SIZE = 560  # the chart's square, in px; the legend adds rows below it
LEGEND_ROW = 20
LEGEND_COLUMN = 180
PNG_SIZE = 800  # px, square
PNG_DPI = 100
# Ten colours that stay apart (Tableau 10); series beyond ten reuse them.
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
BASELINE_COLOUR = "#555555"
PLOT_HINT = "pip install 'pytest-mtbench[plot]'"


@dataclass(frozen=True)
class RadarSeries:
    """One polygon: a label and a score per category (None: no score)."""

    label: str
    values: Mapping[str, float | None]
    colour: str = PALETTE[0]
    dashed: bool = False  # the baseline is drawn dashed


@dataclass(frozen=True)
class RadarGeometry:
    """Where things go on a square chart of side `size`: axes, rings, polygons, labels."""

    axes: tuple[str, ...]
    size: float = SVG_SIZE
    margin: float = 90.0  # room for the axis labels around the rim

    @property
    def centre(self) -> tuple[float, float]:
        return (self.size / 2, self.size / 2)

    @property
    def radius(self) -> float:
        return self.size / 2 - self.margin

    def angle(self, index: int) -> float:
        """The axis' angle in radians, the first pointing up, going clockwise (SVG's y points down)."""
        return -math.pi / 2 + 2 * math.pi * index / len(self.axes)

    def point(self, index: int, value: float) -> tuple[float, float]:
        """The point at `value` (clamped to 0..10) on axis `index`."""
        share = min(max(value, 0.0), MAX_SCORE) / MAX_SCORE
        cx, cy = self.centre
        angle = self.angle(index)
        return (cx + self.radius * share * math.cos(angle), cy + self.radius * share * math.sin(angle))

    def ring(self, value: float) -> list[tuple[float, float]]:
        """The polygon of one grid ring (all axes at `value`)."""
        return [self.point(i, value) for i in range(len(self.axes))]

    def polygon(self, series: RadarSeries) -> list[tuple[float, float]]:
        """The series' polygon; a missing score is drawn at 0."""
        return [self.point(i, series.values.get(name) or 0.0) for i, name in enumerate(self.axes)]

    def label_position(self, index: int) -> tuple[float, float, str]:
        """Where the axis label goes (x, y) and its SVG text-anchor (start, middle or end)."""
        cx, cy = self.centre
        angle = self.angle(index)
        distance = self.radius + 14
        x, y = cx + distance * math.cos(angle), cy + distance * math.sin(angle)
        cos = math.cos(angle)
        anchor = "middle" if abs(cos) < 0.3 else ("start" if cos > 0 else "end")
        # Labels above the centre sit on their baseline; below it they hang from it.
        y += 4 if abs(math.sin(angle)) < 0.3 else (12 if math.sin(angle) > 0 else -4)
        return x, y, anchor


def radar_axes(reports: Sequence[RunReport]) -> list[str]:
    """The chart's axes: the official categories, then any custom category a report has."""
    names = set(CATEGORIES)
    for report in reports:
        names.update(report.categories)
    return category_order(names)


def series_labels(reports: Sequence[RunReport]) -> list[str]:
    """One distinct label per report: the model, with the judge when two reports share a model."""
    labels = [report.run.model for report in reports]
    if len(set(labels)) < len(labels):
        labels = [f"{r.run.model} (judged by {r.run.judge})" for r in reports]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def colour(index: int) -> str:
    """The colour of series `index` (the same in the chart, the tables and the legend)."""
    return PALETTE[index % len(PALETTE)]


def radar_series(reports: Sequence[RunReport]) -> list[RadarSeries]:
    """The polygons to draw: one per report, or, for one report compared with a baseline, both."""
    labels = series_labels(reports)
    series = [
        RadarSeries(label, {name: row.score for name, row in report.categories.items()}, colour(i))
        for i, (label, report) in enumerate(zip(labels, reports))
    ]
    if len(reports) == 1 and reports[0].baseline and reports[0].baseline.comparisons:
        before = {row.name: row.baseline_score for row in reports[0].baseline.comparisons}
        series.insert(0, RadarSeries("baseline", before, BASELINE_COLOUR, dashed=True))
    return series


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _score(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "no score"


# What templates/radar.svg.j2 lays out: every coordinate computed here, rounded as drawn.
@dataclass(frozen=True)
class RingView:
    """One grid ring: its value (the label) and its polygon."""

    value: float
    points: str
    label_y: float


@dataclass(frozen=True)
class AxisView:
    """One category's axis: from the centre to (x, y); its label at (lx, ly), anchored `anchor`."""

    name: str
    x: float
    y: float
    lx: float
    ly: float
    anchor: str


@dataclass(frozen=True)
class DotView:
    """One vertex of a series, with its tooltip; a missing score is drawn small and hollow."""

    x: float
    y: float
    tip: str
    missing: bool


@dataclass(frozen=True)
class SeriesView:
    """One polygon and its vertices."""

    label: str
    colour: str
    dashed: bool
    points: str
    dots: list[DotView]


@dataclass(frozen=True)
class LegendEntry:
    """One series in the legend under the chart (the text cut to fit, the whole label as its tooltip)."""

    x: int
    y: int
    label: str
    text: str
    colour: str
    dashed: bool


def svg(axes: Sequence[str], series: Sequence[RadarSeries], *, size: int = SVG_SIZE, title: str = "") -> str:
    """The chart as a standalone SVG document (also inlined as is into the HTML report)."""
    geometry = RadarGeometry(tuple(axes), float(size))
    per_row = max(1, size // LEGEND_COLUMN)
    rows = math.ceil(len(series) / per_row)
    height = size + rows * LEGEND_ROW + (10 if rows else 0)
    cx, cy = geometry.centre
    rings = [RingView(value, _points(geometry.ring(value)), geometry.point(0, value)[1]) for value in RINGS]
    axis_views = []
    for i, name in enumerate(axes):
        x, y = geometry.point(i, MAX_SCORE)
        lx, ly, anchor = geometry.label_position(i)
        axis_views.append(AxisView(name, round(x, 1), round(y, 1), round(lx, 1), round(ly, 1), anchor))
    series_views = []
    for s in series:
        polygon = geometry.polygon(s)
        dots = [
            DotView(
                round(x, 1),
                round(y, 1),
                f"{s.label}: {name} {_score(s.values.get(name))}",
                s.values.get(name) is None,
            )
            for (x, y), name in zip(polygon, axes)
        ]
        series_views.append(SeriesView(s.label, s.colour, s.dashed, _points(polygon), dots))
    legend = []
    for i, s in enumerate(series):
        row, column = divmod(i, per_row)
        text = s.label if len(s.label) <= 24 else s.label[:23] + "…"
        legend.append(
            LegendEntry(
                10 + column * LEGEND_COLUMN, size + 5 + row * LEGEND_ROW, s.label, text, s.colour, s.dashed
            )
        )
    return render(
        "radar.svg.j2",
        width=size,
        height=height,
        title=title or "MT-Bench category scores",
        rings=rings,
        centre=(round(cx, 1), round(cy, 1)),
        axes=axis_views,
        series=series_views,
        legend=legend,
    )


def figure(axes: Sequence[str], series: Sequence[RadarSeries], *, title: str = "") -> Figure:
    """The chart as a matplotlib Figure of PNG_SIZE px square (no pyplot: no global state, no GUI)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"a PNG radar chart needs matplotlib: {PLOT_HINT}") from None

    inches = PNG_SIZE / PNG_DPI
    fig = Figure(figsize=(inches, inches), dpi=PNG_DPI)
    ax = fig.add_axes((0.14, 0.2, 0.72, 0.68), projection="polar")
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    angles = [2 * math.pi * i / len(axes) for i in range(len(axes))]
    ax.set_xticks(angles, labels=list(axes))
    ax.set_ylim(0, MAX_SCORE)
    ax.set_yticks(RINGS, labels=[f"{v:g}" for v in RINGS], fontsize=8, color="#777777")
    for s in series:
        values = [s.values.get(name) or 0.0 for name in axes]
        closed_angles, closed = [*angles, angles[0]], [*values, values[0]]
        style = "--" if s.dashed else "-"
        ax.plot(closed_angles, closed, color=s.colour, linewidth=2, linestyle=style, label=s.label)
        ax.fill(closed_angles, closed, color=s.colour, alpha=0.06 if s.dashed else 0.12)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.legend(loc="lower center", ncol=min(3, max(1, len(series))), fontsize=9, frameon=False)
    return fig


def png(axes: Sequence[str], series: Sequence[RadarSeries], *, title: str = "") -> bytes:
    """The chart as PNG bytes, PNG_SIZE px square."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(axes, series, title=title)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def chart_title(reports: Sequence[RunReport]) -> str:
    """The chart's title: the model (and what it is compared with), or how many models."""
    if len(reports) == 1:
        report = reports[0]
        versus = " vs baseline" if report.baseline and report.baseline.comparisons else ""
        return f"MT-Bench: {report.run.model}{versus} (judge {report.run.judge})"
    return f"MT-Bench: {len(reports)} models"


def write(report: RunReport, path: Path) -> None:
    """Write the chart of one run (with its baseline, if any) as SVG or PNG, by the path's suffix."""
    write_many([report], path)


def write_many(reports: Sequence[RunReport], path: Path) -> None:
    """Write one chart of several runs (one polygon each) as SVG or PNG, by the path's suffix."""
    axes, series, title = radar_axes(reports), radar_series(reports), chart_title(reports)
    if path.suffix.lower() == ".png":
        _write_bytes_atomically(path, png(axes, series, title=title))
    else:
        write_text_atomically(path, svg(axes, series, title=title))
