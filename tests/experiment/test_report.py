"""The HTML report of a real quick run, opened in headless Chromium.

One real `labctl run experiments/gc-tail-latency.yaml --quick` per module (this machine,
inventories/local.yml), then: analysis agrees with the load generator and with itself,
report.html is self-contained, renders without console messages, holds the verdict table
and decodable PNG figures, and screenshots to a real picture. Chromium missing is a
failure, never a skip.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from labctl.analysis import analyze
from labctl.analysis.samples import collect
from labctl.report import render_report
from tests.conftest import LABCTL, ROOT

pytestmark = pytest.mark.integration

SPEC = "experiments/gc-tail-latency.yaml"
VERDICTS = {"supported", "refuted", "inconclusive"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the flagship experiment once (--quick) into a private data directory."""
    data_dir = tmp_path_factory.mktemp("labctl-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    env["LABCTL_DATA_DIR"] = str(data_dir)
    proc = subprocess.run(
        [str(LABCTL), "run", SPEC, "-i", "inventories/local.yml", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"quick run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    doc = json.loads(proc.stdout)
    run_dir = Path(doc["run_dir"])
    assert run_dir.is_dir() and run_dir.is_relative_to(data_dir)
    return {"doc": doc, "run_dir": run_dir}


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if path is None:
        pytest.fail("chromium is not installed (Debian package `chromium`): the report cannot be checked")
    return path


def browse(page: Path, profile: Path, *action: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def console_messages(stderr: str) -> list[str]:
    """Messages a page wrote to its console, and uncaught exceptions (Chromium logs both as CONSOLE)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href", "srcset", "data", "poster", "action"):
            if a.get(k):
                self.refs.append(str(a[k]))


def parse(html: str) -> Refs:
    p = Refs()
    p.feed(html)
    return p


def png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # decodes every pixel: a truncated or corrupt PNG raises here
        return im.size


# --- the run and its analysis --------------------------------------------------------------


def test_run_json_contract(quick_run: dict[str, Any]) -> None:
    doc = quick_run["doc"]
    assert doc["ok"] is True
    assert doc["run_id"] and doc["run_dir"]
    claims = {v["claim"] for v in doc["verdicts"]}
    assert claims == {"C2.5", "C5.1", "C1.2"}
    for v in doc["verdicts"]:
        assert v["verdict"] in VERDICTS and v["reason"]
    assert isinstance(doc["points_shipped"], int) and isinstance(doc["points_pending"], int)


def test_pooled_percentiles_agree_with_the_load_generator(quick_run: dict[str, Any]) -> None:
    # One cell's per-second histograms, pooled, must give exactly the load generator's own
    # summary percentiles: same histogram, same percentile definition, same window.
    run_dir = quick_run["run_dir"]
    results = json.loads((run_dir / "results.json").read_text())
    checked = 0
    for cell in results["cells"]:
        if cell.get("status") != "ok":
            continue
        (vr,) = collect(run_dir, {"cells": [cell]}).values()
        s = cell["summary"]
        assert vr.hist.counts.sum() == s["responses"]
        for key, q in (("p50_us", 50), ("p99_us", 99), ("p999_us", 99.9), ("max_us", 100)):
            assert vr.hist.pooled_percentile(q) == s[key], (cell["cell_id"], key)
        checked += 1
    assert checked >= 4


def test_analysis_is_reproducible(quick_run: dict[str, Any]) -> None:
    run_dir = quick_run["run_dir"]
    results = json.loads((run_dir / "results.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    again = analyze(run_dir, results, manifest, noise_threshold=results["noise_threshold"])
    # same run → same seed → the very same intervals and verdicts as written by `labctl run`
    assert json.loads(json.dumps(again["verdicts"])) == results["verdicts"]
    assert json.loads(json.dumps(again["comparisons"])) == results["comparisons"]
    variants = {c["variant"] for c in results["cells"]}
    rows = {(r["rate"], r["variant"], r["metric"]) for r in again["comparisons"]}
    expected = {
        (rate, v, m)
        for rate in results["rates"]
        for v in variants - {"go"}
        for m in ("p50_us", "p99_us", "p999_us")
    }
    assert rows == expected
    for r in again["comparisons"]:
        assert r["verdict"] in ("no significant difference", "not compared: saturated cell") or re.fullmatch(
            r"\S+ (lower|higher)", r["verdict"]
        )
    for variant, per_rate in again["stats"].items():
        for rate, st in per_rate.items():
            assert st["n_seconds"] == len(st["seconds"]["p99_us"]) > 0, (variant, rate)
            lo, hi = st["pooled"]["p99_us"]["ci"]
            assert lo <= hi


# --- the report ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(quick_run: dict[str, Any]) -> Path:
    path = render_report(quick_run["run_dir"])
    assert path == quick_run["run_dir"] / "report.html"
    return path


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text()
    p = parse(html)
    remote = [r for r in p.refs if re.match(r"\s*(https?:)?//", r, re.I)]
    assert remote == [], remote
    assert all(r.startswith("data:") or r.startswith("#") for r in p.refs), p.refs
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", html, re.I)  # nothing fetched from CSS
    assert "@import" not in html


def test_report_figures_are_pngs(report: Path) -> None:
    p = parse(report.read_text())
    # two rates (percentile spectrum each) + latency over time + throughput + memory, and the
    # GC pause figure when a cycle fell into a measured window
    assert len(p.imgs) >= 5
    for img in p.imgs:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert w >= 300 and h >= 150, (img.get("alt"), w, h)
        assert img.get("alt")


def test_report_in_chromium(report: Path, tmp_path: Path) -> None:
    html = report.read_text()
    n_imgs = len(parse(html).imgs)
    results = json.loads((report.parent / "results.json").read_text())

    # The console check works: a broken page is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert console_messages(browse(bad, tmp_path / "p0", "--dump-dom").stderr)

    dom_run = browse(report, tmp_path / "p1", "--dump-dom")
    assert console_messages(dom_run.stderr) == []
    dom = dom_run.stdout
    p = parse(dom)
    assert len(p.imgs) == n_imgs
    assert all(str(i["src"]).startswith("data:image/png;base64,") for i in p.imgs)
    # the verdict table: one row per claim, coloured by verdict
    m = re.search(r"<h2>Verdicts</h2>\s*<table>(.*?)</table>", dom, re.S)
    assert m, dom[:2000]
    table = m.group(1)
    for v in results["verdicts"]:
        assert f"<b>{v['claim']}</b>" in table
        assert re.search(rf'<tr class="{v["verdict"]}">\s*<td><b>{re.escape(v["claim"])}</b>', table)
    for section in ("Every variant against the baseline", "Plots", "Cells", "Host context"):
        assert f"<h2>{section}</h2>" in dom

    shot = tmp_path / "report.png"
    shot_run = browse(report, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1200,4000")
    assert console_messages(shot_run.stderr) == []
    data = shot.read_bytes()
    assert len(data) > 50_000, len(data)  # figures and tables, not a blank page
    assert png_size(data) == (1200, 4000)
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # plots are drawn, not an empty canvas
