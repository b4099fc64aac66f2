"""The answer in layers: what is settled, what the evidence suggests, and what is undecided.

Every statement is computed from the stored results, carries its number and interval, names
the experiment it comes from and links to it:

- **Settled** -- what holds by construction or by exact arithmetic, and the verdict of an
  experiment on exact counts (`Result.extra["exact"]`). Experiments declare these
  themselves in `Result.extra["statements"]` (`{"level": "settled", "text": ..., "claim": ...}`,
  the claim defaulting to the result's), because only the experiment knows which of its numbers
  are exact.
- **Suggested by the evidence** -- a decisive verdict (supported, partly supported, not
  supported) from at least 3 seeds, or from a deterministic measurement of a real model, on
  models that clear their bar, with an interval that does not straddle the criterion's
  threshold; plus the experiments' own layer-by-layer statements (`"level": "suggested"`).
- **Undecided** -- everything else, each with why (under-trained, too few seeds, an effect
  within noise, experiments that disagree, a failure, nothing measured) and the command that
  would decide it. A statement of an experiment that failed its quality bar or has too few
  seeds is only ever shown here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ffnlab import numbers as fmt
from ffnlab.report.answer import headline
from ffnlab.report.claims import CLAIMS, anchor_id, claim
from ffnlab.report.html import slug
from ffnlab.report.load import StoredStudy
from ffnlab.results import INCONCLUSIVE, MIN_SEEDS, VERDICTS, Result, base_verdict, is_indicative

SETTLED, SUGGESTED, UNDECIDED = "settled", "suggested", "undecided"
LEVELS = (SETTLED, SUGGESTED, UNDECIDED)
TITLES = {SETTLED: "Settled (by construction or exact arithmetic)", SUGGESTED: "Suggested by the evidence",
          UNDECIDED: "Undecided"}


@dataclass(frozen=True)
class Statement:
    level: str
    claim: str
    text: str  # plain text, its number and interval included
    source: str  # the experiment (or claim) it comes from
    href: str
    why: str = ""  # undecided: why
    command: str = ""  # undecided: what would decide it


def _href(r: Result) -> str:
    return "#" + slug("exp", r.name)


def _full_command(r: Result, seeds: int = MIN_SEEDS) -> str:
    """The run that would give `r` a verdict: the full size with at least `seeds` paired seeds."""
    return f"ffnlab run {r.name} --full --seeds {seeds}"


def _why_undecided(r: Result) -> tuple[str, str] | None:
    """(why, command) when `r`'s verdict cannot be read as evidence, else None."""
    if r.verdict == INCONCLUSIVE:
        command = _full_command(r) if r.mode == "quick" else (
            f"{r.command}, after raising the full size's training steps (experiments/common.py SIZES)")
        return f"under-trained: {r.reason}", command
    if is_indicative(r.verdict):
        n = len(r.seeds)
        return f"too few seeds ({n} of the {MIN_SEEDS} a verdict needs)", _full_command(r)
    est = headline(r)
    c = r.criterion
    if c is not None and est is not None and est.quantity == c.quantity and est.ci_low < c.threshold < est.ci_high:
        n = max(2 * len(r.seeds), MIN_SEEDS + 3)
        return (f"effect within noise: {est.quantity} = {fmt.estimate(est)} straddles the threshold "
                f"{fmt.num(c.threshold)}", _full_command(r, n) + " (more paired seeds)")
    return None


def _finding(r: Result) -> str:
    """A decisive verdict in one sentence: what it says about the claim, with its number."""
    c = claim(r.claim)
    does = c.does or c.topic.lower()
    base = base_verdict(r.verdict)
    lead = {"supported": f"The FFN {does}", "partly supported": f"In part, the FFN {does}",
            "not supported": f"Not that the FFN {does}"}[base]
    parts = [lead + f" ({r.title})"]
    if r.reason:
        parts.append(r.reason.rstrip("."))
    est = headline(r)
    if est is not None and est.quantity not in r.reason:
        parts.append(f"{est.quantity} = {fmt.estimate(est)}")
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if parts[2:] else "") + "."


def _declared(r: Result) -> list[Statement]:
    """The experiment's own statements, demoted to undecided when its verdict cannot be read as evidence."""
    out = []
    undecided = _why_undecided(r) if r.verdict else None
    for s in r.extra.get("statements", []):
        level, text, about = s.get("level"), s.get("text", ""), s.get("claim", r.claim)
        if level not in (SETTLED, SUGGESTED) or not text:
            continue
        if level == SUGGESTED and undecided is not None:
            out.append(Statement(UNDECIDED, about, text, r.name, _href(r), *undecided))
        else:
            out.append(Statement(level, about, text, r.name, _href(r)))
    return out


def _conflicts(claim_id: str, results: list[Result]) -> list[Statement]:
    """Decisive experiments of one claim that disagree, named."""
    decisive = [r for r in results if base_verdict(r.verdict) in VERDICTS and _why_undecided(r) is None]
    if len({base_verdict(r.verdict) for r in decisive}) < 2:
        return []
    said = "; ".join(f"{r.name} says {base_verdict(r.verdict)}" for r in decisive)
    return [Statement(UNDECIDED, claim_id, f"The experiments on {claim(claim_id).topic.lower()} disagree: {said}.",
                      claim_id, "#" + anchor_id(claim_id),
                      "conflicting experiments: they measure different models or contrasts; read each section",
                      " and ".join(_full_command(r) for r in decisive if r.mode == "quick") or "")]


def layered_answer(study: StoredStudy) -> dict[str, list[Statement]]:
    """Statements per level, in claim order (see the module docstring)."""
    levels: dict[str, list[Statement]] = {lv: [] for lv in LEVELS}
    grouped = study.by_claim()
    for claim_id in list(CLAIMS) + [c for c in grouped if c not in CLAIMS]:
        results = grouped.get(claim_id, [])
        failures = [f for f in study.failures if f.claim == claim_id]
        for r in results:
            for s in _declared(r):
                levels[s.level].append(s)
            if base_verdict(r.verdict) not in VERDICTS and r.verdict != INCONCLUSIVE:
                continue  # descriptive: only what it declares
            why = _why_undecided(r)
            if why is None:  # a verdict on exact counts (`extra["exact"]`) is settled, any other is evidence
                level = SETTLED if r.extra.get("exact") else SUGGESTED
                levels[level].append(Statement(level, claim_id, _finding(r), r.name, _href(r)))
            else:
                c = claim(claim_id)
                as_if = base_verdict(r.extra.get("verdict_if_trained", {}).get("verdict") or r.verdict)
                levels[UNDECIDED].append(Statement(
                    UNDECIDED, claim_id, f"Whether the FFN {c.does or c.topic.lower()} ({r.title}); the numbers "
                    f"as they stand would say: {as_if}.", r.name, _href(r), *why))
        levels[UNDECIDED].extend(_conflicts(claim_id, results))
        for f in failures:
            levels[UNDECIDED].append(Statement(UNDECIDED, claim_id, f"{f.name} did not produce a result.", f.name,
                                               "#failures", f"failed: {f.error}", f"ffnlab run {f.name} --{f.mode}"))
        if not results and not failures:
            levels[UNDECIDED].append(Statement(UNDECIDED, claim_id, f"{claim(claim_id).topic}: nothing stored.",
                                               claim_id, "#" + anchor_id(claim_id), "not measured",
                                               "ffnlab study --full"))
    return levels
