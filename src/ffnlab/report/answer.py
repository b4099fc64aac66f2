"""The direct answer to "what does the FFN after attention do?", composed from stored verdicts.

Nothing here is a conclusion written in advance: every sentence is chosen by the verdicts
the experiments computed against their pre-registered criteria, quotes their headline number,
and links to the section with the evidence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ffnlab import numbers as fmt
from ffnlab.report.claims import CLAIMS, anchor_id, claim
from ffnlab.report.load import Failure, StoredStudy
from ffnlab.results import INCONCLUSIVE, INDICATIVE, VERDICTS, Estimate, Result, base_verdict, is_indicative

UNMEASURED = "not measured"
NO_VERDICT = "no verdict"


def claim_verdict(results: list[Result]) -> str:
    """One verdict for a claim tested by several experiments: agreement, else 'partly supported'.

    Inconclusive experiments do not count towards it, but leave it indicative, as does any
    indicative one; all inconclusive: inconclusive."""
    verdicts = [r.verdict for r in results if r.verdict]
    if not results:
        return UNMEASURED
    if not verdicts:
        return NO_VERDICT
    if len(set(verdicts)) == 1:
        return verdicts[0]
    bases = {base_verdict(v) for v in verdicts} - {INCONCLUSIVE}
    if not bases:
        return INCONCLUSIVE
    agreed = bases.pop() if len(bases) == 1 else "partly supported"
    weak = any(is_indicative(v) or v == INCONCLUSIVE for v in verdicts)
    return INDICATIVE + agreed if weak else agreed


def headline(result: Result) -> Estimate | None:
    """The estimate the criterion is about (else the first one)."""
    if result.criterion:
        for e in result.estimates:
            if e.quantity == result.criterion.quantity:
                return e
    return result.estimates[0] if result.estimates else None


@dataclass(frozen=True)
class Sentence:
    claim: str
    verdict: str
    text: str  # plain text; the page links it to `href`
    href: str


def _sentence(claim_id: str, results: list[Result], failures: list[Failure]) -> Sentence:
    c = claim(claim_id)
    verdict = claim_verdict(results)
    base = base_verdict(verdict)
    does = c.does or c.topic.lower()
    if base == "supported":
        text = f"The FFN {does}."
    elif base == "partly supported":
        text = f"Only in part: the FFN {does}."
    elif base == "not supported":
        text = f"The measurements do not support that the FFN {does}."
    elif base == INCONCLUSIVE:
        text = f"Whether the FFN {does} is open: the models it rests on are under-trained."
    elif verdict == NO_VERDICT:
        text = f"Measured without a verdict: whether the FFN {does}."
    elif failures:
        f = failures[0]
        text = f"Whether the FFN {does} is open: {f.name} failed ({f.error})."
    else:
        text = f"Whether the FFN {does} is open: no experiment has a stored result."
    evidence = []
    counts = Counter(r.verdict or NO_VERDICT for r in results)
    if len(results) > 1:
        evidence.append(f"of {len(results)} experiments, " + " and ".join(f"{n} {v}" for v, n in counts.items()))
    lead = next((r for r in results if (r.verdict or NO_VERDICT) == verdict), results[0] if results else None)
    if lead is not None:
        if lead.reason:
            evidence.append(lead.reason.rstrip("."))
        est = headline(lead)
        if est is not None and est.quantity not in lead.reason:
            evidence.append(f"{est.quantity} = {fmt.estimate(est)}")
    if evidence:
        text += " " + "; ".join(evidence)[:1].upper() + "; ".join(evidence)[1:] + "."
    if is_indicative(verdict):
        text = "Indicative only (fewer than 3 seeds, or resting partly on under-trained models): " + text
    return Sentence(claim_id, base, text, "#" + anchor_id(claim_id))


def answer(study: StoredStudy) -> dict[str, list[Sentence]]:
    """Sentences per verdict group, in the order: supported, partly, not supported, the rest."""
    grouped = study.by_claim()
    ids = list(CLAIMS) + [c for c in grouped if c not in CLAIMS]
    groups: dict[str, list[Sentence]] = {v: [] for v in (*VERDICTS, INCONCLUSIVE, NO_VERDICT, UNMEASURED)}
    for claim_id in ids:
        s = _sentence(claim_id, grouped.get(claim_id, []), [f for f in study.failures if f.claim == claim_id])
        groups[s.verdict].append(s)
    return {v: s for v, s in groups.items() if s}
