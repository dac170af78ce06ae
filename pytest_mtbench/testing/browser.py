"""A headless Chromium driven through selenium, to look at the HTML report as a reader would.

Uses the system's browser and driver (Debian's `chromium` and `chromium-driver`: /usr/bin/chromium,
/usr/bin/chromedriver); nothing is downloaded. Every process it starts is gone when the context exits,
and its profile is a fresh temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path(os.environ.get("MTBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MTBENCH_CHROMEDRIVER", "/usr/bin/chromedriver"))
INSTALL_HINT = "apt-get install -y chromium chromium-driver"
# Flags that work in a container as root, with no network wanted and nothing kept between runs.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def missing() -> str | None:
    """Why no browser can be started here (the fix included), or None when one can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not found: {INSTALL_HINT}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


def _children(pid: int) -> list[int]:
    """Every live descendant of `pid` (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[WebDriver]:
    """A selenium driver of a fresh headless Chromium with a `width` x `height` window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mtbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    started = service.process.pid if service.process is not None else None
    try:
        # The window's size includes its frame: fix the viewport itself, so screenshots are width x height.
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        yield driver
    finally:
        ours = [started, *_children(started)] if started is not None else []
        try:
            driver.quit()
        finally:
            # quit() ends the browser; a process it leaves (a crashed renderer's helper) is ended here.
            deadline = time.monotonic() + 5
            while any(_alive(pid) for pid in ours) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in ours:
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(profile, ignore_errors=True)


@dataclass(frozen=True)
class PageLoad:
    """How long a page took: as measured around `driver.get`, and the browser's own load event."""

    seconds: float
    load_event_ms: float  # navigation start to the end of the load event, from the Navigation Timing API
    dom_ready_ms: float


def open_page(driver: WebDriver, path: Path) -> PageLoad:
    """Open a local file and wait for it to load."""
    began = time.perf_counter()
    driver.get(path.resolve().as_uri())
    seconds = time.perf_counter() - began
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return [n.loadEventEnd, n.domContentLoadedEventEnd];"
    )
    return PageLoad(seconds, float(timing[0]), float(timing[1]))


@dataclass(frozen=True)
class ImageStats:
    """What an image shows, roughly: its size, how many colours, how much of it is not background."""

    width: int
    height: int
    colours: int
    ink: float  # share of pixels that are not (nearly) white


def _pixels(png: bytes) -> Any:
    """The image as an (height, width, 3) array of RGB values."""
    import io

    import numpy
    from PIL import Image

    return numpy.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=numpy.int16)


def image_stats(png: bytes) -> ImageStats:
    """Size, colour count and the share of non-white pixels of a PNG."""
    pixels = _pixels(png)
    height, width, _ = pixels.shape
    flat = pixels.reshape(-1, 3)
    colours = len({tuple(p) for p in flat[:: max(1, len(flat) // 200_000)].tolist()})
    ink = float((flat.min(axis=1) < 235).mean())
    return ImageStats(width, height, colours, ink)


def pixels_near(png: bytes, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of a PNG are within `tolerance` (per channel) of the colour `rgb`."""
    pixels = _pixels(png).reshape(-1, 3)
    return int((abs(pixels - list(rgb)) <= tolerance).all(axis=1).sum())
