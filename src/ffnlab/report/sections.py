"""The report's sections: one per claim (all its experiments), and reproducibility."""

from __future__ import annotations

from ffnlab import numbers as fmt
from ffnlab.report import extra, figures
from ffnlab.report.answer import claim_verdict, headline
from ffnlab.report.claims import anchor_id, claim
from ffnlab.report.html import badge, esc, pre_json, slug, table
from ffnlab.report.load import Failure, StoredStudy
from ffnlab.results import Result

LONG_TABLE = 12  # rows; longer tables start folded
SEE_ALSO = {  # claim -> (experiment filed under another claim, what it shows for this one)
    "C3": ("pretrained-ladder", "how linear each FFN of SmolLM2 and MiniLM is, layer by layer: the fraction of "
                                "loss a fitted affine map recovers (replacement ladder, under C6)"),
}


def result_id(r: Result) -> str:
    return slug("exp", r.name)


def claim_section(claim_id: str, results: list[Result], failures: list[Failure], stored: set[str] = frozenset()) -> str:
    """One claim's section; `stored`: names of every stored result (a see-also links only to those)."""
    c = claim(claim_id)
    verdict = claim_verdict(results)
    parts = [f'<section id="{anchor_id(claim_id)}" class="claim">',
             f"<h2><span class=\"cid\">{esc(claim_id)}</span> {esc(c.topic)} {badge(verdict)}</h2>"]
    if c.statement:
        parts.append(f'<blockquote class="statement">{esc(c.statement)}</blockquote>')
    if not results:
        parts.append('<p class="note">No stored result for this claim yet.</p>')
    if claim_id in SEE_ALSO:
        name, what = SEE_ALSO[claim_id]
        ref = (f'<a href="#{slug("exp", name)}"><code>{esc(name)}</code></a>' if name in stored
               else f"<code>{esc(name)}</code> (not stored yet)")
        parts.append(f'<p class="note">See also {ref}: {esc(what)}.</p>')
    parts += [_result(r) for r in results]
    for f in failures:
        parts.append(f'<p class="failure"><strong>{esc(f.name)}</strong> ({esc(f.mode)}) failed: '
                     f"<code>{esc(f.error)}</code></p>")
    parts.append("</section>")
    return "\n".join(parts)


def _result(r: Result) -> str:
    rid = result_id(r)
    out = [f'<article class="result" id="{rid}">',
           f'<h3>{esc(r.title or r.name)} {badge(r.verdict)}</h3>',
           f'<p class="meta"><code>{esc(r.name)}</code> · {esc(r.mode)} · version {r.version} · '
           f"{len(r.seeds)} seed{'s' if len(r.seeds) != 1 else ''}</p>",
           _stale(r),
           f'<p><strong>Method.</strong> {esc(r.method)}</p>' if r.method else "",
           _verdict(r), _deviations(r), _training(r)]
    if r.estimates:
        best = headline(r)
        rows = []
        for e in r.estimates:
            ci = f"[{fmt.num(e.ci_low)}, {fmt.num(e.ci_high)}]" if fmt.has_interval(e) else "—"
            name = f"<strong>{esc(e.quantity)}</strong>" if e is best else esc(e.quantity)
            rows.append([name, esc(fmt.num(e.mean)), esc(ci), esc(e.unit),
                         esc(", ".join(fmt.num(v) for v in e.per_seed))])
        out.append("<h4>Numbers (mean and 95% confidence interval)</h4>")
        out.append(table(["quantity", "mean", "95% CI", "unit", "per seed"], rows, raw=True))
    for i, s in enumerate(r.series):
        fig_id = slug("fig", r.name, str(i))
        if figures.is_empty(s):
            out.append(f'<p class="note" id="{fig_id}">{esc(s.title)}: no data to plot.</p>')
            continue
        note = f" {esc(s.note)}" if s.note else ""
        out.append(f'<figure id="{fig_id}" class="fig"><figcaption><strong>{esc(s.title)}.</strong>{note}'
                   f"</figcaption>{figures.svg(s, fig_id)}</figure>")
    for t in r.tables:
        body = table(t.columns, t.rows, note=t.note)
        if len(t.rows) > LONG_TABLE:  # e.g. one row per layer: the figures carry the shape, the table the detail
            out.append(f'<details class="table"><summary><strong>{esc(t.title)}</strong> ({len(t.rows)} rows)'
                       f"</summary>{body}</details>")
        else:
            out.append(f"<h4>{esc(t.title)}</h4>" + body)
    if r.anchors:
        out.append("<h4>Published results beside ours</h4>")
        out.append(table(["source", "published", "ours"], [[a.source, a.published, a.ours] for a in r.anchors]))
    if r.caveats:
        out.append("<h4>Caveats</h4><ul class=\"caveats\">" + "".join(f"<li>{esc(c)}</li>" for c in r.caveats)
                   + "</ul>")
    if r.extra:
        out.append(f'<details class="extra" open><summary>Examples and details</summary>{extra.render(r.extra)}'
                   "</details>")
    if r.command:
        out.append(f'<p class="cmd">Regenerate: <code>{esc(r.command)}</code></p>')
    out.append("</article>")
    return "\n".join(x for x in out if x)


def _deviations(r: Result) -> str:
    if not r.deviations:
        return ""
    items = "".join(f"<li>version {d.version}: {esc(d.changed)}. <em>Seen before the change:</em> {esc(d.seen)}. "
                    f"<em>Why:</em> {esc(d.why)}.</li>" for d in r.deviations)
    return ('<div class="deviations"><strong>Changed after results were seen</strong> (not pre-registered):'
            f"<ul>{items}</ul></div>")


def deviations_section(study: StoredStudy) -> str:
    """Every criterion or protocol changed after results were seen, study-wide, linked to its result."""
    rows = [[f'<a href="#{result_id(r)}">{esc(r.name)}</a>', str(d.version), esc(d.changed), esc(d.seen), esc(d.why)]
            for r in study.results for d in r.deviations]
    if not rows:
        return ""
    return ('<section id="deviations"><h2>Deviations from the pre-registered criteria</h2>'
            "<p>Each of these was changed after results had been seen; a verdict under a changed criterion is "
            "weaker evidence than one fixed before the run.</p>"
            + table(["result", "version", "what changed", "seen before", "why"], rows, raw=True) + "</section>")


def current_fingerprint(name: str) -> str | None:
    """The fingerprint of the code that would produce experiment `name` now (None: not registered)."""
    from ffnlab.experiments.registry import load_all

    exp = load_all().get(name)
    return exp.fingerprint() if exp is not None else None


def _stale(r: Result) -> str:
    now = current_fingerprint(r.name)
    if now is None or r.code_fingerprint == now:
        return ""
    made = f"code {r.code_fingerprint}" if r.code_fingerprint else "code that recorded no fingerprint"
    return (f'<p class="stale"><strong>Stale:</strong> produced by {esc(made)}; the code now is {esc(now)}. '
            f"<code>{esc(r.command)}</code> recomputes it.</p>")


def training_table(qualities: list[dict], experiments: list[str] | None = None) -> str:
    """Trained language models beside the n-gram baselines of their tokenization (`quality.Quality`)."""
    rows = []
    for i, q in enumerate(qualities):
        imp = q.get("improvement")
        plateau = "—" if imp is None else f"{100 * imp:.1f}% ({'yes' if q.get('plateaued') else 'no'})"
        standing = f"exempt: {q['exempt']}" if q.get("exempt") else ("meets the bar" if q["meets"] else "misses it")
        if q.get("comparison") and not q.get("exempt"):
            standing += " (comparison model: must beat the best n-gram)"
        if not q.get("in_verdict", True):
            standing += " (reference: the criterion does not use it)"
        if q.get("first_steps"):
            standing += f" (retrained longer: its {q['first_steps']}-step run missed the plateau)"
        row = [q["name"], q["family"], q["lr"], q["steps"], q["test_loss"], q["best_ngram"], q.get("ngram_order", ""),
               q["gap"], q["bar"], plateau, standing]
        rows.append(([experiments[i]] if experiments else []) + row)
    columns = ["model", "FFN family", "lr", "steps", "test loss", "best n-gram", "n-gram", "gap (nats)", "bar",
               "last-20% fall (plateau)", "standing"]
    return table((["experiment"] if experiments else []) + columns, rows,
                 note="Test loss in nats per token over the test split; the best n-gram is the best of unigram, "
                      "Kneser-Ney bigram and trigram of the same tokenization, fitted on training and tuned on "
                      "validation, scored on the same test tokens; gap = best n-gram minus model. The learning rate "
                      "is the one the model's FFN family won in a sweep on validation.")


def _training(r: Result) -> str:
    if not r.training:
        return ""
    return "<h4>Trained models against their bar</h4>" + training_table(r.training)


def models_section(study: StoredStudy) -> str:
    """Every trained language model of the stored results, once, against its bar."""
    seen, qualities, owners = set(), [], []
    for r in study.results:
        for q in r.training:
            key = (q["name"], q.get("run_id"))
            if key not in seen:
                seen.add(key)
                qualities.append(q)
                owners.append(r.name)
    if not qualities:
        return ""
    measured = [q for q in qualities if not q.get("exempt") and q.get("bar") is not None]
    used = [q for q in measured if q.get("in_verdict", True)]
    return ('<section id="models"><h2>Are the models worth measuring?</h2>'
            f"<p>{sum(q['meets'] for q in measured)} of {len(measured)} trained language models clear their bar; "
            f"of the {len(used)} that criteria use, {sum(q['meets'] for q in used)} (the rest of the "
            f"{len(qualities)} are exempt controls or synthetic tasks). An experiment that rests on a model "
            "which misses it has the verdict <em>inconclusive (under-trained)</em>; a reference model that "
            "misses it is flagged here and in its section.</p>"
            + training_table(qualities, owners) + "</section>")


def _verdict(r: Result) -> str:
    lines = []
    if r.criterion:
        c = r.criterion
        lines.append(f"<strong>Pre-registered criterion:</strong> {esc(c.quantity)} {esc(c.direction)} "
                     f"{esc(fmt.num(c.threshold))} — {esc(c.rule)}")
    if r.verdict:
        why = f": {esc(r.reason)}" if r.reason else ""
        lines.append(f"<strong>Verdict:</strong> {badge(r.verdict)}{why}")
    elif r.reason:
        lines.append(f"<strong>Finding:</strong> {esc(r.reason)}")
    return f'<div class="verdict">{"<br>".join(lines)}</div>' if lines else ""


def reproducibility(study: StoredStudy) -> str:
    out = ['<section id="reproducibility"><h2>Reproducibility</h2>']
    if study.records:
        for mode, rec in study.records.items():
            env = rec.get("environment", {})
            rows = [[k, v] for k, v in env.items()]
            rows += [["code version", rec.get("code_version", "")], ["started", rec.get("started", "")],
                     ["wall time (s)", rec.get("wall_seconds", "")], ["command", rec.get("command", "")]]
            out.append(table(["", f"study run ({mode})"], rows))
    else:
        out.append('<p class="note">These results were not produced by <code>ffnlab study</code>, so the '
                   "environment of the run was not recorded.</p>")
    rows = [[f'<a href="#{result_id(r)}">{esc(r.name)}</a>', esc(r.mode), esc(r.version),
             esc(", ".join(map(str, r.seeds))), esc(r.code_version), esc(r.started),
             esc(fmt.num(round(r.wall_seconds, 1))), f"<code>{esc(r.command)}</code>"] for r in study.results]
    out.append("<h3>Every section, and the command that regenerates it</h3>")
    out.append(table(["experiment", "mode", "version", "seeds", "code version", "started", "wall time (s)",
                      "command"], rows, raw=True))
    out.append("<h3>Configurations</h3>")
    for r in study.results:
        out.append(f"<details><summary><code>{esc(r.name)}</code> ({esc(r.mode)})</summary>{pre_json(r.config)}"
                   "</details>")
    out.append("</section>")
    return "\n".join(out)
