"""Headless Chromium opens the field report and one star page: every image loads, none is blank,
every section shows something, and the star link leads to a working page.

The pages are served by a throwaway HTTP server on 127.0.0.1 (canvas pixel reads need one origin).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading

import numpy as np
import pytest

from beastflow.report import make_report

from .test_report import run_output  # noqa: F401 - fixture
from .test_star import _with_best_model, _write_pdf2d

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: per image: loaded, its size, and the fraction of pixels that differ from the top-left (background) one
IMAGE_CHECK = """() => Array.from(document.images).map(img => {
  const out = {src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0,
               w: img.naturalWidth, h: img.naturalHeight, inked: 0};
  if (!out.loaded) return out;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4 * 7) {
    if (Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2]) > 30) n++;
  }
  out.inked = n / (d.length / (4 * 7));
  return out;
})"""

#: per h2 section: does it hold an image, a link list, or an error line?
SECTION_CHECK = """() => Array.from(document.querySelectorAll('h2[id]')).map(h => {
  let el = h.nextElementSibling, imgs = 0, links = 0, err = '';
  while (el && el.tagName !== 'H2') {
    imgs += el.tagName === 'IMG' ? 1 : el.querySelectorAll('img').length;
    links += el.querySelectorAll ? el.querySelectorAll('li a').length : 0;
    if (el.classList && el.classList.contains('err')) err = el.textContent;
    el = el.nextElementSibling;
  }
  return {title: h.textContent, imgs, links, err};
})"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI installs it via .ci/install-services)")
        pytest.skip(why)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - no request log in the test output
        pass


def _assert_images_ok(page, where: str) -> list[dict]:
    images = page.evaluate(IMAGE_CHECK)
    assert images, f"{where}: no images"
    bad = [i for i in images if not i["loaded"]]
    assert not bad, f"{where}: images that did not load: {[i['src'] for i in bad]}"
    blank = [i for i in images if i["inked"] < 0.01]
    assert not blank, f"{where}: blank images: {[(i['src'], i['inked']) for i in blank]}"
    return images


def test_report_and_star_page_render_in_chromium(run_output, tmp_path):  # noqa: F811
    _need(_chromium() is not None, "chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install -e '.[test]')")

    out, truth = run_output
    _with_best_model(out, np.arange(len(truth["star_id"])) % 500)
    _write_pdf2d(out, truth["star_id"])
    rep = make_report(str(out))
    folder = os.path.dirname(rep.index)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(f"{base}/index.html", wait_until="load")
            images = _assert_images_ok(page, "report")
            assert len(images) == len(rep.images) - sum(len(s.images) for s in rep.sections if s.links)
            sections = page.evaluate(SECTION_CHECK)
            titles = {s["title"] for s in sections}
            assert {"Prior vs stacked posterior", "Parameter recovery by S/N", "Example stars, one page each"} <= titles
            empty = [
                s["title"]
                for s in sections
                if s["err"]
                or (
                    s["imgs"] == 0
                    and s["links"] == 0
                    and s["title"] not in ("Run", "Artifacts used", "Recovery summary")
                )
            ]
            assert not empty, f"sections without a plot: {empty}"
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

            page.get_by_role("link", name="star_id", exact=False).first.click()
            page.wait_for_load_state("load")
            assert "/star_" in page.url
            star_images = _assert_images_ok(page, page.url)
            kinds = sorted(i["src"].rsplit("_", 1)[-1] for i in star_images)
            assert kinds == ["corner.png", "pdf1d.png", "sed.png"]
            assert page.get_by_text("Posterior summary").count() == 1
            page.screenshot(path=str(tmp_path / "star.png"), full_page=True)
            page.get_by_role("link", name="field report").click()
            page.wait_for_load_state("load")
            assert page.url.endswith("/index.html")
            browser.close()
        assert not failed, f"requests that failed: {failed}"
    finally:
        server.shutdown()
        server.server_close()
