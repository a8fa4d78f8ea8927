"""``geoseg report``: the self-contained HTML report, checked as data and in a real browser.

The browser tests run in headless Chromium (:mod:`tests.chromium`) wherever it is on the PATH;
CI installs Debian's ``chromium`` and sets ``GEOSEG_REQUIRE_CHROMIUM=1``, which turns a missing
browser into a failure instead of a skip. Each keeps its screenshot in ``build/test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from geoseg.io.scene import Scene
from geoseg.report.build import SceneEntry, build_report, run_entries, scene_panel
from geoseg.synth.scenes import random_boxes, shapes_scene
from tests import chromium

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "build" / "test-artifacts"
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]
#: magenta outline pixels on the map canvas (the objects' colour)
MAGENTA = """(() => { const c = document.getElementById("map");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 90 && d[i + 2] > 200) n++;
  return n; })()"""


def browser():
    if chromium.executable() is None:
        if os.environ.get("GEOSEG_REQUIRE_CHROMIUM"):
            pytest.fail("GEOSEG_REQUIRE_CHROMIUM is set but no Chromium is on the PATH")
        pytest.skip("no Chromium on the PATH (Debian: apt-get install chromium)")
    return chromium


def keep(name: str, png: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)


def offline(load) -> None:
    """The page made no request but for itself and its inlined pictures, and logged no error."""
    outside = [u for u in load.requests if not (u.startswith("data:") or u.startswith("file://"))]
    assert outside == []
    assert len([u for u in load.requests if u.startswith("file://")]) == 1  # the page itself
    assert load.errors == []


def tanker_scene(tmp_path: Path, n: int = 12, size: int = 1200) -> tuple[Path, Path]:
    """A scene of ``n`` bright boxes with overviews, and their outlines (the 'prediction')."""
    scene, truth = tmp_path / "scene.tif", tmp_path / "truth.geojson"
    shapes_scene(
        scene,
        size,
        size,
        random_boxes(size, size, n, seed=3, size=(20, 60)),
        truth=truth,
        crs="EPSG:32631",
        transform=from_origin(400000, 5600000, 1.5, 1.5),
    )
    return scene, truth


# -- the browser harness can fail --------------------------------------------------------------
def test_the_harness_sees_requests_and_console_errors(tmp_path):
    b = browser()
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="http://127.0.0.1:9/x.png"><script>console.error("boom");'
        'fetch("https://example.invalid/").catch(() => {}); document.body.dataset.ready = "1";'
        "</script></body></html>"
    )
    load = b.load(page.as_uri())
    assert "http://127.0.0.1:9/x.png" in load.requests and "https://example.invalid/" in load.requests
    assert "boom" in load.errors
    with pytest.raises(AssertionError):
        offline(load)


# -- a prediction's report in the browser ------------------------------------------------------
def test_prediction_report_draws_every_object_offline(tmp_path):
    b = browser()
    scene, truth = tanker_scene(tmp_path)
    out = tmp_path / "report.html"
    r = subprocess.run(
        [*GEOSEG, "report", str(truth), "-s", str(scene), "-t", str(truth), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert "default-src 'none'" in html  # the page's policy forbids any request
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing to fetch
    load = b.load(
        out.as_uri(),
        expressions=[
            "window.geosegReport.objects",
            "window.geosegReport.drawn",
            MAGENTA,
            "document.querySelectorAll('#tbody tr').length",
            "document.querySelector('#cards').textContent",
            "document.querySelector('#note').textContent",
        ],
    )
    keep("prediction-report.png", load.screenshot)
    offline(load)
    v = list(load.values.values())
    assert v[0] == 12 and v[1] == 12  # every object, all drawn at the whole-scene view
    assert v[2] > 12 * 20  # outlines are on the canvas
    assert v[3] == 12
    assert "F1" in v[4] and "1.000" in v[4]  # scored against the truth given
    assert "duplicates 0, seam splits 0, parts 0" in v[5], v[5]

    # a click on a table row shows that object: zoomed in on it, only it and its neighbours drawn
    after = b.load(
        out.as_uri(),
        expressions=[
            "(async () => { document.querySelector('#tbody tr:nth-child(5)').click();"
            " await new Promise(r => setTimeout(r, 300));"
            " return [window.geosegReport.drawn, document.querySelector('#selected').textContent,"
            " document.querySelector('#tbody tr.on') !== null]; })()",
        ],
    )
    keep("prediction-report-selected.png", after.screenshot)
    drawn, selected, highlighted = next(iter(after.values.values()))
    assert 1 <= drawn < 12 and selected.endswith("id5") and highlighted  # row 5: object 5
    assert after.errors == []


def test_large_report_pages_its_table_and_draws_on_a_canvas(tmp_path):
    b = browser()
    scene, truth = tanker_scene(tmp_path, n=2500, size=4000)
    entries = [SceneEntry(f"s{k}", image=str(scene), vectors=str(truth)) for k in range(2)]
    out = tmp_path / "big.html"
    out.write_text(build_report(entries, title="big", max_side=1024))
    load = b.load(
        out.as_uri(),
        expressions=[
            "window.geosegReport.objects",
            "window.geosegReport.drawn",
            "document.querySelectorAll('#tbody tr').length",
            "document.querySelector('#pager').textContent",
            "document.querySelectorAll('svg, svg *').length",
        ],
    )
    keep("large-report.png", load.screenshot)
    offline(load)
    objects, drawn, rows, pager, svg = load.values.values()
    assert objects == 5000 and drawn == 2500  # one scene on the map at a time
    assert rows == 100 and "1–100 of 5000" in pager
    assert svg == 0  # drawn on a canvas, not as thousands of SVG nodes


def test_run_report_lists_failed_and_skipped_scenes(tmp_path):
    b = browser()
    scene, truth = tanker_scene(tmp_path, n=5, size=800)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.geojson").write_text(truth.read_text())
    report = {
        "job": "nightly",
        "started": "2026-12-01T00:00:00Z",
        "seconds": 12.5,
        "tiles_run": 9,
        "tiles_per_second": 0.72,
        "done": 1,
        "skipped": 1,
        "failed": 1,
        "scenes": [
            {
                "scene": "a",
                "href": str(scene),
                "result": "done",
                "objects": 5,
                "tiles_run": 9,
                "seconds": 12.5,
                "outputs": ["a.geojson"],
            },
            {
                "scene": "b",
                "href": str(scene),
                "result": "skipped",
                "objects": 5,
                "outputs": ["a.geojson"],
                "reason": "done at 2026-11-30T00:00:00Z (5 objects)",
            },
            {
                "scene": "c",
                "href": str(tmp_path / "c.tif"),
                "result": "failed",
                "error": "SceneError: scene 'c.tif': cannot read window at row 0, col 0",
            },
        ],
    }
    out = tmp_path / "run.html"
    out.write_text(build_report(run_entries(report, str(tmp_path / "out")), title="run", summary=report))
    load = b.load(
        out.as_uri(),
        expressions=[
            "document.querySelector('#scenes').textContent",
            "document.querySelector('#cards').textContent",
            "window.geosegReport.drawn",
            "(async () => { document.querySelector('.scene[data-i=\"2\"]').click();"
            " await new Promise(r => setTimeout(r, 200));"
            " return document.querySelector('#empty').textContent; })()",
        ],
    )
    keep("run-report.png", load.screenshot)
    offline(load)
    scenes, cards, drawn, empty = load.values.values()
    assert "failed" in scenes and "cannot read window" in scenes and "skipped" in scenes
    assert "12.5 s" in cards and "0.72" in cards and "tiles per second" in cards
    assert drawn == 5
    assert "Failed" in empty and "cannot read window" in empty


# -- what the page is made of -----------------------------------------------------------------
def test_pictures_come_from_overviews_not_a_full_read(tmp_path):
    path = tmp_path / "s.tif"
    profile = dict(
        driver="GTiff",
        width=2048,
        height=2048,
        count=1,
        dtype="uint8",
        crs="EPSG:32631",
        transform=from_origin(500000, 6000000, 1, 1),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 2048, 2048), 100, np.uint8))
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path, "r+") as dst:  # full resolution changed, overviews left as they were
        dst.write(np.full((1, 2048, 2048), 7, np.uint8))
    with Scene(str(path)) as s:
        data, transform, note = s.overview(600)
        assert data.shape == (1, 600, 600) and note == "overview 1:2"  # 1024 px, the smallest >= 600
        assert np.all(data == 100)  # read from the overview, not from the full resolution
        assert transform.a == pytest.approx(2048 / 600)
        none, _, why = s.overview(600, full_read_limit=0)
        assert none is not None  # overviews exist: the limit on whole reads does not apply
    bare = tmp_path / "bare.tif"
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(np.full((1, 2048, 2048), 9, np.uint8))
    with Scene(str(bare)) as s:
        data, _, note = s.overview(600, full_read_limit=2048 * 2048 - 1)
        assert data is None and "no overviews" in note and "gdaladdo" in note
        data, _, note = s.overview(600)
        assert data.shape == (1, 600, 600) and np.all(data == 9) and "no overviews" in note


def test_panel_outlines_sit_on_the_objects(tmp_path):
    scene, truth = tanker_scene(tmp_path, n=6, size=1200)
    panel = scene_panel(SceneEntry("s", image=str(scene), vectors=str(truth)), max_side=600)
    assert panel["size"] == [600, 600] and len(panel["objects"]) == 6
    with rasterio.open(scene) as ds:
        band = ds.read(1)
    for obj in panel["objects"]:  # each outline, back at full resolution, surrounds bright pixels
        ring = np.asarray(obj["shape"][0][0]).reshape(-1, 2) * 2.0
        c0, r0 = np.floor(ring.min(0)).astype(int)
        c1, r1 = np.ceil(ring.max(0)).astype(int)
        assert band[r0:r1, c0:c1].max() >= 200
    assert panel["columns"][:1] == ["id"] or "class" in panel["columns"]


def test_semantic_slice_report_has_the_mask_and_dice(tmp_path):
    from PIL import Image

    img = (np.random.default_rng(0).random((128, 160)) * 80).astype(np.uint8)
    img[30:90, 20:70] = 200
    mask = np.zeros((128, 160), np.uint8)
    mask[30:90, 20:70] = 1
    Image.fromarray(img).save(tmp_path / "slice.png")
    Image.fromarray(mask).save(tmp_path / "pred.png")
    Image.fromarray(mask).save(tmp_path / "truth.png")
    panel = scene_panel(
        SceneEntry(
            "slice",
            image=str(tmp_path / "slice.png"),
            mask=str(tmp_path / "pred.png"),
            truth=str(tmp_path / "truth.png"),
        )
    )
    assert panel["overlay"].startswith("data:image/png;base64,")
    assert panel["evaluation"]["kind"] == "masks" and panel["evaluation"]["slices"][0]["dice"] == 1.0
    assert panel["size"] == [160, 128]


def test_report_data_cannot_break_out_of_its_script(tmp_path):
    scene, truth = tanker_scene(tmp_path, n=2, size=600)
    doc = json.loads(truth.read_text())
    doc["features"][0]["properties"]["class"] = "</script><script>alert(1)</script>"
    (tmp_path / "evil.geojson").write_text(json.dumps(doc))
    html = build_report(
        [SceneEntry("s", image=str(scene), vectors=str(tmp_path / "evil.geojson"))], title="<b>t"
    )
    assert "<script>alert(1)" not in html and "<title>&lt;b&gt;t</title>" in html


def test_report_errors_are_one_line_and_write_nothing(tmp_path):
    scene, truth = tanker_scene(tmp_path, n=2, size=600)
    out = tmp_path / "r.html"
    r = subprocess.run(
        [*GEOSEG, "report", str(tmp_path / "nope.geojson"), "-s", str(scene), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "prediction" in r.stderr and "nope.geojson" in r.stderr and not out.exists()
    r = subprocess.run(
        [*GEOSEG, "report", str(truth), "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "one --scene per prediction" in r.stderr
    out.write_text("keep")
    r = subprocess.run(
        [*GEOSEG, "report", str(truth), "-s", str(scene), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "already exists" in r.stderr and out.read_text() == "keep"
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_demo_pipeline_report_shows_the_tankers_found(tmp_path):
    """make demo's last three steps (predict with the committed model, eval, report) on a smaller
    scene of the same kind: the page draws every tanker found, and most true ones have a match."""
    b = browser()
    scene = tmp_path / "scene.tif"
    found_path, truth_path = str(tmp_path / "tankers.geojson"), str(tmp_path / "scene.truth.geojson")
    steps = [
        ["synth", "tankers", str(scene), "--size", "2048", "--gsd", "1.5", "--crs", "EPSG:32631",
         "--seed", "7", "--clouds"],
        ["predict", str(scene), "-m", "tankers-light", "-o", found_path],
        ["report", found_path, "-s", str(scene), "-t", truth_path, "-o", str(tmp_path / "report.html")],
    ]  # fmt: skip
    for step in steps:
        r = subprocess.run([*GEOSEG, *step], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    found = len(json.loads((tmp_path / "tankers.geojson").read_text())["features"])
    true = len(json.loads((tmp_path / "scene.truth.geojson").read_text())["features"])
    load = b.load((tmp_path / "report.html").as_uri(), expressions=[
        "window.geosegReport.drawn", MAGENTA, "document.querySelector('#cards').textContent",
    ])  # fmt: skip
    keep("demo-like-report.png", load.screenshot)
    offline(load)
    drawn, magenta, cards = load.values.values()
    assert drawn == found and found >= 0.8 * true and magenta > 10 * found
    assert "F1" in cards and "recall" in cards
