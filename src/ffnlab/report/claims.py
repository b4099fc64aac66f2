"""The study's claims C1–C8 (from the study plan) and how the report words their verdicts.

Each claim carries the claim as stated, a short topic, and `does`: what the FFN would do if
the claim held, as a verb phrase. The opening answer is composed from these and the stored
verdicts, so it changes when the measurements change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    topic: str
    statement: str
    does: str  # "the FFN {does}"


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("C1", "Position-wise computation",
          "The FFN applies one and the same weights at every position and moves no information between "
          "positions, so it parallelises perfectly across tokens.",
          "applies the same weights at every position and moves no information between positions"),
    Claim("C2", "Rank collapse without the FFN",
          "Without the FFN, self-attention only re-averages value vectors, and stacking it loses token "
          "diversity (rank collapse).",
          "keeps token representations from collapsing into one another, which attention alone does not"),
    Claim("C3", "The nonlinearity",
          "The FFN's point is the element-wise nonlinearity that attention lacks.",
          "matters through its element-wise nonlinearity, which attention lacks"),
    Claim("C4", "Post-processing attention's output",
          "The FFN post-processes attention's output (including the concatenated heads) into what the next "
          "layer needs.",
          "post-processes attention's output into what the next layers need"),
    Claim("C5", "Parameter and FLOP accounting",
          "FFNs give every block its own large set of parameters; they hold about half of all parameters "
          "(BERT-base: hidden width 3072).",
          "holds about half of all parameters, a large separate set in every block"),
    Claim("C6", "Shrinking, sharing, replacing: the efficiency frontier",
          "Because they are so big, FFNs can be shrunk, shared or replaced.",
          "can be shrunk, shared or replaced at little cost in loss"),
    Claim("C7", "Key-value memories",
          "FFNs work as key-value memories: keys detect input patterns, values push the prediction toward "
          "tokens; lower layers hold shallow patterns, upper layers semantic ones.",
          "works as a key-value memory: its keys detect input patterns and its values promote output tokens"),
    Claim("C8", "Facts in the FFN, computation in attention",
          "FFNs are where facts are stored; attention is where in-context computation happens.",
          "is where facts are stored, while attention does the in-context computation"),
)}


def claim(claim_id: str) -> Claim:
    """The claim `claim_id`, or a generic one for ids outside C1–C8 (e.g. an extra analysis)."""
    return CLAIMS.get(claim_id) or Claim(claim_id, f"Other analyses ({claim_id})", "", "")


def anchor_id(claim_id: str) -> str:
    """The HTML id of a claim's section."""
    return "claim-" + "".join(ch if ch.isalnum() else "-" for ch in claim_id.lower())
