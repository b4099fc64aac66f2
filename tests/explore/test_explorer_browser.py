"""The explorer in headless Chromium: every page loads without a script error or a request to anywhere but
the app; a layer sorts and searches; a prompt runs; an intervention updates the distribution live and
is recorded in the URL; the static export opens from disk with no request beyond its own files.
Screenshots go to test-artifacts/explore-*.png."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser import Browser, chromium_path
from htmlcheck import check

from ffnlab.explore import export_static

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (`make test` installs it)")


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as b:
        yield b


BAD_REQUEST = "Failed to load resource: the server responded with a status of 400 (Bad Request)"


def visit(browser: Browser, url: str, shot: str, width: int = 1280, errors: tuple[str, ...] = ()) -> None:
    """Open `url`; the console logs no error but `errors` (the browser's own line for a page answered 400)."""
    browser.events.clear()
    browser.open(url, width, 900)
    browser.screenshot(ARTIFACTS / f"explore-{shot}.png")
    assert browser.console_errors() == list(errors)


def only_from(browser: Browser, origin: str) -> list[str]:
    """The requests the page made that did not go to `origin`."""
    return [u for u in browser.requests() if not u.startswith(origin)]


def wait_until(browser: Browser, expression: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.eval(expression)
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(expression)


def test_overview_layer_and_neuron_pages(browser, server, explorer):
    visit(browser, server + "/", "overview")
    assert browser.eval("document.querySelectorAll('#overview tbody tr').length") == explorer.n_layers
    browser.eval("document.querySelector('#overview tbody tr:nth-child(2) a').click()")
    browser.wait_for("Page.loadEventFired")
    assert browser.eval("location.pathname") == "/layer/1"
    browser.screenshot(ARTIFACTS / "explore-layer.png")
    width = explorer.widths[1]
    assert browser.eval("document.querySelectorAll('#neurons tbody tr').length") == width
    # sort by share of tokens active, highest first, then lowest first
    active = explorer.stats.layers[1].sparsity
    browser.eval("document.querySelector('th[data-key=active]').click()")
    first = browser.eval("+document.querySelector('#neurons tbody tr').dataset.active")
    assert first == pytest.approx(float(active.max()))
    browser.eval("document.querySelector('th[data-key=active]').click()")
    assert browser.eval("+document.querySelector('#neurons tbody tr').dataset.active") == pytest.approx(float(active.min()))
    # search by a value token: exactly the rows whose promoted or suppressed tokens or triggers hold it
    view = explorer.layer(1)
    word = view.rows[5].promotes[0].strip().lower() or "e"
    browser.eval(f"const s = document.getElementById('search'); s.value = {word!r}; s.dispatchEvent(new Event('input'))")
    visible = browser.eval("[...document.querySelectorAll('#neurons tbody tr')].filter(r => !r.hidden).map(r => +r.dataset.index)")
    want = [r.index for r in view.rows if word in f"{r.index} {r.trigger} {r.context} {' '.join(r.promotes)} "
            f"{' '.join(r.suppresses)}".lower()]
    assert 5 in visible and sorted(visible) == want
    browser.screenshot(ARTIFACTS / "explore-layer-search.png")
    # search by statistics: active on more than half of the tokens, with a negative top activation
    browser.eval("const t = document.getElementById('search'); t.value = 'active>50 top<0'; "
                 "t.dispatchEvent(new Event('input'))")
    visible = browser.eval("[...document.querySelectorAll('#neurons tbody tr')].filter(r => !r.hidden).map(r => +r.dataset.index)")
    assert sorted(visible) == [r.index for r in view.rows if 100 * r.active > 50 and r.top < 0]
    assert browser.eval("document.getElementById('shown').textContent") == f"{len(visible)} shown"
    visit(browser, server + "/neuron/1/5", "neuron")
    assert browser.eval("document.querySelectorAll('#triggers mark').length") == explorer.stats.cfg.k
    used = explorer.stats.layers[1].hist[5].nonzero().flatten().tolist()  # bins from the first to the last used
    assert browser.eval("document.querySelectorAll('svg.hist rect').length") == used[-1] - used[0] + 1
    assert browser.eval("document.querySelectorAll('#by-value a').length") == 8
    assert only_from(browser, server) == []


def test_a_prompt_runs_from_the_form(browser, server, explorer):
    visit(browser, server + "/prompt", "prompt-empty")
    browser.eval("document.querySelector('textarea[name=text]').value = 'To be, or not to be'; "
                 "document.getElementById('prompt-form').submit()")
    browser.wait_for("Page.loadEventFired")
    browser.screenshot(ARTIFACTS / "explore-prompt.png")
    assert browser.eval("document.querySelectorAll('#layers tbody tr').length") == explorer.n_layers
    n = len(explorer.opened.encode("To be, or not to be"))
    assert browser.eval("document.querySelectorAll('#per-position tbody tr').length") == n
    assert browser.eval("document.querySelectorAll('#layers td.subs a').length") == explorer.n_layers * 6
    assert browser.console_errors() == [] and only_from(browser, server) == []


def test_an_intervention_updates_the_distribution_live_and_the_url_records_it(browser, server, explorer):
    visit(browser, server + "/intervene", "intervene-empty")
    assert browser.eval("document.getElementById('result').hidden") is True
    browser.eval("const f = document.getElementById('intervene-form'); "
                 "f.prompt.value = 'To be, or not to be'; f.ffn.value = '1'; f.off.value = '0:3,0:7'; "
                 "f.requestSubmit()")
    wait_until(browser, "document.body.dataset.applied")
    kl = float(browser.eval("document.getElementById('kl').textContent"))
    assert kl > 0
    query = parse_qs(urlsplit(browser.eval("location.href")).query)
    assert query == {"prompt": ["To be, or not to be"], "off": ["0:3,0:7"], "ffn": ["1"]}
    browser.screenshot(ARTIFACTS / "explore-intervene.png")
    # the recorded URL, opened afresh, renders the same intervention on the server
    shared = browser.eval("location.href")
    visit(browser, shared, "intervene-shared")
    assert float(browser.eval("document.getElementById('kl').textContent")) == pytest.approx(kl, abs=1e-4)
    rows = browser.eval("document.querySelectorAll('#distribution tbody tr').length")
    assert rows >= 10
    # typing a bad neuron shows the one-line error instead of a result
    browser.eval("const f = document.getElementById('intervene-form'); f.off.value = '0:99999'; "
                 "f.dispatchEvent(new Event('input'))")
    wait_until(browser, "!document.getElementById('error').hidden")
    assert "neuron 99999 out of range" in browser.eval("document.getElementById('error').textContent")
    assert browser.console_errors() == [BAD_REQUEST]  # the API's answer to the bad neuron, nothing else
    assert only_from(browser, server) == []


def test_an_error_page_is_one_message(browser, server):
    visit(browser, server + "/neuron/1/99999", "error", errors=(BAD_REQUEST,))
    assert browser.eval("document.getElementById('error').textContent") == (
        "neuron 99999 out of range; layer 1 has neurons 0..255")


def test_the_static_export_opens_offline(browser, explorer, tmp_path):
    out = export_static(explorer, tmp_path / "export", neurons=[(1, 5)], per_layer=2, progress=False)
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == sorted(["index.html", "layer-00.html", "layer-01.html",
                            *{f"neuron-{li:02d}-{n:05d}.html" for li, n in [(1, 5)] + explorer.export_picks(2)}])
    for page in out.glob("*.html"):
        s = check(page.read_text())
        assert s.errors == [], (page.name, s.errors)
        assert {f.split("=", 1)[1].rstrip(">") for f in s.fetches} <= {"static/explore.css", "static/explore.js", "data:,"}  # data:, the empty icon
        for link in s.outbound_links:  # every link leads to an exported file
            assert (out / link.split("?")[0]).is_file(), (page.name, link)
    origin = out.as_uri()
    visit(browser, (out / "index.html").as_uri(), "export-overview")
    browser.eval("document.querySelector('#overview tbody tr:nth-child(2) a').click()")
    browser.wait_for("Page.loadEventFired")
    assert browser.eval("document.querySelectorAll('#neurons tbody tr').length") == explorer.widths[1]
    assert browser.eval("document.querySelectorAll('#neurons tbody a').length") == len(
        {n for li, n in [(1, 5)] + explorer.export_picks(2) if li == 1})
    browser.eval("document.querySelector('#neurons tbody a[href=\"neuron-01-00005.html\"]').click()")
    browser.wait_for("Page.loadEventFired")
    browser.screenshot(ARTIFACTS / "explore-export-neuron.png")
    assert browser.eval("document.querySelectorAll('#triggers mark').length") == explorer.stats.cfg.k
    assert browser.console_errors() == []
    assert only_from(browser, origin) == []
    # a second export replaces the first; a directory that is not an export is never replaced
    export_static(explorer, out, per_layer=1, progress=False)
    assert not (out / "neuron-01-00005.html").exists() or (1, 5) in explorer.export_picks(1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    from ffnlab.errors import FFNLabError

    with pytest.raises(FFNLabError, match="is not an explorer export"):
        export_static(explorer, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
