"""The report in a real browser (headless Chromium): it renders, draws every figure, logs no error,
fetches nothing, and fits a phone screen. Screenshots are kept in test-artifacts/."""

from pathlib import Path

import pytest
from browser import Browser, chromium_path
from stored_study import results, write_study

from ffnlab.report import render_report

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (`make test` installs it)")

FIGURES = """[...document.querySelectorAll('figure.fig')].map(f => {
  const svg = f.querySelector('svg'); const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {id: f.id, width: r.width, height: r.height, shapes: svg ? svg.querySelectorAll('path, use').length : 0,
          texts: svg ? svg.querySelectorAll('text').length : 0,
          // the smallest text as drawn: its font size in SVG units times the viewBox-to-screen scale
          minText: svg ? Math.min(...[...svg.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize)))
                         * r.width / svg.viewBox.baseVal.width : 0};
})"""


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("study") / "results"
    write_study(root)
    return render_report(root).as_uri()


def test_desktop_renders_every_figure_without_errors_or_fetches(browser, url):
    browser.open(url, 1280, 900)
    figs = browser.eval(FIGURES)
    assert len(figs) == sum(len(r.series) for r in results())
    for f in figs:
        assert f["width"] > 300 and f["height"] > 150, f
        assert f["shapes"] > 10 and f["texts"] >= 4, f  # data, ticks, axis labels, legend
    assert browser.eval("document.title").startswith("ffnlab study")
    assert browser.eval("document.querySelector('#answer li a').getAttribute('href')").startswith("#claim-")
    browser.screenshot(ARTIFACTS / "report.png")
    assert browser.console_errors() == []
    assert set(browser.requests()) == {url}  # only the page itself


def test_phone_width_has_no_page_overflow(browser, url):
    browser.open(url, 390, 844, mobile=True)
    width = browser.eval("window.innerWidth")
    assert width == 390
    # wide tables and figures scroll inside their own box; the page itself never scrolls sideways
    assert browser.eval("document.documentElement.scrollWidth") <= width
    figs = browser.eval(FIGURES)
    assert all(f["width"] > 300 for f in figs)
    # figures keep their text readable (>= 10 px) instead of shrinking to the screen
    assert min(f["minText"] for f in figs) >= 10, figs
    browser.screenshot(ARTIFACTS / "report-phone.png")
    assert browser.console_errors() == []
    assert set(browser.requests()) == {url}
