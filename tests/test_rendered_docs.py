"""The built documentation, as a newcomer's browser shows it (headless Chromium).

Run after building the docs; ``.ci/run`` does both::

    python -m sphinx -W -b html docs docs/_build/html
    python -m pytest -m browser tests/test_rendered_docs.py

Marked ``browser`` (not in the default run, which does not build the docs).
For each page a newcomer visits, at a desktop and a phone width: every table
has header cells with text, no code line is cut off at the box's edge, every
image loads, and the page links to the previous and the next one. Screenshots
of every page land in ``docs/_build/screenshots`` (CI keeps them).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "docs" / "_build" / "html"
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
PAGES = [
    "index",
    "install",
    "tutorials",
    "presence",
    "howto",
    "mobile",
    "production",
    "verdicts",
    "benchmarks",
    "reference",
]
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}

# Run in the page: what a reader would see go wrong.
PROBLEMS_JS = """
const problems = [];
for (const table of document.querySelectorAll("article table")) {
  const heads = [...table.querySelectorAll("thead th")];
  const caption = table.innerText.split("\\n")[0].slice(0, 60);
  if (heads.length === 0) problems.push(`table without a header row: ${caption}`);
  else if (heads.some(th => th.innerText.trim() === ""))
    problems.push(`table with an empty header cell: ${caption}`);
}
for (const pre of document.querySelectorAll("article pre")) {
  if (pre.scrollWidth > pre.clientWidth + 1) {
    const line = pre.innerText.split("\\n")
      .reduce((a, b) => b.length > a.length ? b : a, "");
    problems.push(
      `code cut off (${pre.scrollWidth} > ${pre.clientWidth} px): ${line.slice(0, 80)}`
    );
  }
}
const page = document.scrollingElement;
if (page.scrollWidth > window.innerWidth + 1)
  problems.push(`the page is wider than the screen (${page.scrollWidth} px)`);
for (const img of document.querySelectorAll("article img")) {
  if (!img.complete || img.naturalWidth === 0)
    problems.push(`image not loaded: ${img.src}`);
}
return problems;
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (HTML / "index.html").exists():
        pytest.fail(
            "build the docs first: python -m sphinx -b html docs docs/_build/html"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: Any, page: str, viewport: str) -> None:
    width, height = VIEWPORTS[viewport]
    driver.set_window_size(width, height)
    driver.get((HTML / f"{page}.html").as_uri())
    # Images and fonts: wait until the document says it is complete.
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (document.readyState === 'complete') done();"
        "else window.addEventListener('load', () => done());"
    )


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_for_a_newcomer(browser: Any, page: str, viewport: str) -> None:
    _open(browser, page, viewport)
    problems = browser.execute_script(PROBLEMS_JS)
    # A full-page screenshot: the window as tall as the page.
    full = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(VIEWPORTS[viewport][0], min(int(full), 30000))
    browser.save_screenshot(str(SCREENSHOTS / f"{page}-{viewport}.png"))
    assert problems == []


def test_pages_link_to_the_previous_and_the_next(browser: Any) -> None:
    _open(browser, "tutorials", "desktop")
    links = browser.execute_script(
        "return [...document.querySelectorAll('.related-pages a')]"
        ".map(a => [a.className, a.getAttribute('href')])"
    )
    assert sorted(links) == [
        ["next-page", "presence.html"], ["prev-page", "install.html"],
    ]  # fmt: skip


def test_reference_explains_every_setting_and_links_trio(browser: Any) -> None:
    _open(browser, "reference", "desktop")
    text = browser.execute_script("return document.body.innerText")
    # The #: comments of the settings classes render as parameter docs.
    assert (
        "idle (float | None) \N{EN DASH} Seconds without traffic before the "
        "first probe (TCP_KEEPIDLE)." in text
    )
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('a')].map(a => a.href)"
    )
    assert any(h.startswith("https://trio.readthedocs.io/") for h in hrefs)
    assert any(h.startswith("https://docs.python.org/3/") for h in hrefs)
