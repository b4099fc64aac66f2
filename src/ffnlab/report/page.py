"""The whole report as one self-contained HTML page: inline CSS and SVG, no script, no fetches."""

from __future__ import annotations

from datetime import datetime, timezone

from ffnlab import numbers as fmt
from ffnlab.report import sections
from ffnlab.report.answer import NO_VERDICT, UNMEASURED, answer, claim_verdict, headline
from ffnlab.report.claims import CLAIMS, anchor_id, claim
from ffnlab.report.html import badge, esc, table
from ffnlab.report.layers import TITLES, layered_answer
from ffnlab.report.load import StoredStudy
from ffnlab.results import INCONCLUSIVE, MIN_SEEDS, code_version

QUESTION = "What does the feed-forward layer after attention do?"

_GROUP_TITLES = {
    "supported": "What the measurements support",
    "partly supported": "What holds only in part",
    "not supported": "What they do not support",
    INCONCLUSIVE: "Inconclusive: the models are not yet worth measuring",
    NO_VERDICT: "Measured, without a pre-registered verdict",
    UNMEASURED: "Not measured",
}

CSS = """
:root{--fg:#1d1d1f;--muted:#5f6368;--bg:#fff;--line:#dadce0;--accent:#0b57d0;--soft:#f6f8fb}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;color:var(--fg);background:var(--bg);font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
 "Helvetica Neue",Arial,sans-serif}
main{max-width:60rem;margin:0 auto;padding:1.5rem 1.25rem 4rem}
h1{font-size:1.9rem;line-height:1.2;margin:.5rem 0 1rem}
h2{font-size:1.45rem;margin:2.5rem 0 .75rem;padding-top:.75rem;border-top:2px solid var(--line)}
h3{font-size:1.15rem;margin:1.75rem 0 .4rem}
h4{font-size:1rem;margin:1.25rem 0 .4rem}
h5{font-size:.95rem;margin:1rem 0 .3rem}
a{color:var(--accent)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
pre{background:var(--soft);padding:.75rem;overflow-x:auto;border-radius:6px}
.answer{background:var(--soft);border-left:4px solid var(--accent);padding:.75rem 1.1rem;border-radius:6px}
.answer h3{margin:.9rem 0 .3rem;font-size:1rem}
.answer ul{margin:.2rem 0 .6rem;padding-left:1.2rem}
.answer li{margin:.3rem 0}
.cid{color:var(--muted);font-weight:600}
.statement{margin:.5rem 0 1rem;padding:.25rem 1rem;border-left:3px solid var(--line);color:var(--muted);
 font-style:italic}
.meta,.note,figcaption{color:var(--muted);font-size:.9rem}
.badge{display:inline-block;font-size:.75rem;font-weight:600;padding:.1rem .5rem;border-radius:999px;
 vertical-align:middle;white-space:nowrap;border:1px solid transparent}
.badge.supported{background:#e6f4ea;color:#0d652d;border-color:#a8dab5}
.badge.partly-supported{background:#fef7e0;color:#7a4f01;border-color:#fdd663}
.badge.not-supported{background:#fce8e6;color:#a50e0e;border-color:#f6aea9}
.badge.failed{background:#fff;color:#a50e0e;border-color:#f6aea9}
.badge.no-verdict,.badge.not-measured{background:#f1f3f4;color:#3c4043;border-color:var(--line)}
.badge.inconclusive-under-trained{background:#f3e8fd;color:#5b2a86;border-color:#d7aefb}
.badge.indicative{border-style:dashed;border-color:currentColor}
.stale{color:#a50e0e}
.deviations{border-left:3px solid #b06000;padding:.2em .8em;margin:.6em 0;background:#fff8ec}
.verdict{background:var(--soft);padding:.6rem .9rem;border-radius:6px;margin:.75rem 0}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.5rem 0 1rem;max-width:100%}
table{border-collapse:collapse;font-size:.9rem;min-width:100%}
caption{text-align:left;color:var(--muted);padding:.25rem 0}
th,td{border-bottom:1px solid var(--line);padding:.35rem .6rem;text-align:left;vertical-align:top}
th{background:var(--soft);white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
figure.fig{margin:1rem 0 1.5rem;overflow-x:auto;-webkit-overflow-scrolling:touch}
figure.fig svg{display:block;width:100%;max-width:36rem;height:auto}
figure.fig svg *{stroke-linejoin:round;stroke-linecap:butt}
figcaption{margin-bottom:.3rem}
nav.toc ol{padding-left:1.3rem;columns:2 18rem}
nav.toc li{margin:.15rem 0;break-inside:avoid}
.failure{background:#fce8e6;padding:.5rem .75rem;border-radius:6px;overflow-wrap:anywhere}
.cmd code,td code{overflow-wrap:anywhere}
details{margin:.4rem 0}
summary{cursor:pointer;color:var(--accent)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:.75rem;margin:.5rem 0}
.card{border:1px solid var(--line);border-radius:8px;padding:.6rem .8rem;min-width:0}
.card-title{font-weight:600;margin-bottom:.3rem}
.key{color:var(--muted);font-size:.85rem;margin-top:.4rem}
ol.contexts{margin:.2rem 0;padding-left:1.4rem;font-size:.9rem;overflow-wrap:anywhere}
mark{background:#ffe08a;padding:0 .1rem;border-radius:2px}
.ws{color:var(--muted)}
.chips{display:flex;flex-wrap:wrap;gap:.25rem;margin:.25rem 0}
code.tok{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:0 .3rem;
 white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%}
ul.texts{margin:.2rem 0;padding-left:1.2rem;font-size:.9rem;overflow-wrap:anywhere}
footer{color:var(--muted);font-size:.85rem;margin-top:3rem;border-top:1px solid var(--line);padding-top:.75rem}
@media (max-width:600px){
 body{font-size:15px}
 main{padding:1rem .8rem 3rem}
 h1{font-size:1.5rem}
 h2{font-size:1.25rem}
 th,td{padding:.3rem .45rem}
 td{min-width:5.5rem}
 figure.fig svg{min-width:29rem}
}
"""


def render_page(study: StoredStudy) -> str:
    grouped = study.by_claim()
    ids = list(CLAIMS) + [c for c in grouped if c not in CLAIMS]
    body = [f"<h1>{esc(QUESTION)}</h1>", _layers(study), _answer(study), _overview(study, ids),
            sections.models_section(study),
            sections.deviations_section(study), _toc(study, ids)]
    if study.failures:
        body.append(_failures(study))
    for claim_id in ids:
        body.append(sections.claim_section(claim_id, grouped.get(claim_id, []),
                                           [f for f in study.failures if f.claim == claim_id],
                                           {r.name for r in study.results}))
    body.append(sections.reproducibility(study))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body.append(f"<footer>Rendered {esc(now)} by ffnlab {esc(code_version())} from the results in "
                f"<code>{esc(study.root)}</code>; nothing was recomputed. Regenerate with "
                "<code>ffnlab report</code>.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>ffnlab study: {esc(QUESTION)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _layers(study: StoredStudy) -> str:
    """The opening: every statement with its confidence level (`report.layers`)."""
    levels = layered_answer(study)
    out = ['<section id="layers" class="answer"><h2>The answer, by how sure it is</h2>',
           "<p>Each statement below is computed from the stored results and links to its evidence. "
           "<em>Settled</em>: holds by construction or exact arithmetic. <em>Suggested</em>: a verdict from "
           f"at least {MIN_SEEDS} paired seeds (or a deterministic measurement of a real model) on models that "
           "clear their bar, its interval clear of the threshold. <em>Undecided</em>: why, and the command "
           "that would decide it.</p>"]
    for level, statements in levels.items():
        out.append(f'<h3 id="level-{level}">{esc(TITLES[level])} ({len(statements)})</h3><ul>')
        if not statements:
            out.append("<li>None.</li>")
        for s in statements:
            item = f'<li class="{level}">{esc(s.text)} <a href="{s.href}">{esc(s.source)} →</a>'
            if s.why:
                item += f"<br><small>Why undecided: {esc(s.why)}."
                item += f" Decided by: <code>{esc(s.command)}</code></small>" if s.command else "</small>"
            out.append(item + "</li>")
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def _answer(study: StoredStudy) -> str:
    n = len(study.results)
    modes = sorted({r.mode for r in study.results})
    out = ['<section id="answer" class="answer">',
           f"<p><strong>One verdict per claim</strong>, from {n} stored experiment{'s' if n != 1 else ''} "
           f"({', '.join(modes) or 'none'} mode), each judged against a criterion fixed before it ran"
           + (f'; not counted: <a href="#failures">{len(study.failures)} failed</a>' if study.failures else "")
           + ":</p>"]
    for verdict, sentences in answer(study).items():
        out.append(f"<h3>{esc(_GROUP_TITLES[verdict])}</h3><ul>")
        for s in sentences:
            out.append(f'<li>{esc(s.text)} <a href="{s.href}">{esc(s.claim)} →</a></li>')
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def _overview(study: StoredStudy, ids: list[str]) -> str:
    grouped = study.by_claim()
    rows = []
    for claim_id in ids:
        results = grouped.get(claim_id, [])
        lead = next((r for r in results if headline(r)), None)
        est = headline(lead) if lead else None
        if est:
            number = f"{esc(est.quantity)} = {esc(fmt.estimate(est))}"
        else:  # e.g. an exact accounting without estimates: its finding in words
            number = esc(_short(results[0].reason)) if results else ""
        failed = [f for f in study.failures if f.claim == claim_id]
        verdict = badge("failed") if failed and not results else badge(claim_verdict(results))
        rows.append([f'<a href="#{anchor_id(claim_id)}">{esc(claim_id)}</a>', esc(claim(claim_id).topic),
                     verdict, esc(len(results)), number])
    return ('<section id="overview"><h2>Verdicts at a glance</h2>'
            + table(["claim", "topic", "verdict", "experiments", "headline number"], rows, raw=True)
            + "</section>")


def _short(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def _toc(study: StoredStudy, ids: list[str]) -> str:
    items = [f'<li><a href="#{anchor_id(c)}">{esc(c)} · {esc(claim(c).topic)}</a></li>' for c in ids]
    if study.failures:
        items.insert(0, '<li><a href="#failures">Failed experiments</a></li>')
    if any(r.training for r in study.results):
        items.insert(0, '<li><a href="#models">Are the models worth measuring?</a></li>')
    items.append('<li><a href="#reproducibility">Reproducibility</a></li>')
    return f'<nav class="toc" id="contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'


def _failures(study: StoredStudy) -> str:
    rows = [[esc(f.name), esc(f.claim), esc(f.mode), f"<code>{esc(f.error)}</code>"] for f in study.failures]
    return ('<section id="failures"><h2>Failed experiments</h2><p>These did not produce a result in the latest '
            "study run; their sections show older stored results if any. The full traceback is kept in "
            "<code>study/logs/</code> under the results directory.</p>"
            + table(["experiment", "claim", "mode", "error"], rows, raw=True) + "</section>")
