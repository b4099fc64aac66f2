"""Causal tracing (Meng et al. 2022, ROME §2): where does a fact's recall run through?

Corrupt the subject tokens' embeddings (`hook_embed`) with Gaussian noise of 3x the
embedding standard deviation; then restore one clean state at a time — a whole hidden state
(`hook_resid_post`), or the FFN output (`ffn.hook_out`) or attention output (`attn.hook_out`)
over a window of layers around it — and measure how much of the answer's probability comes
back. Indirect effect IE = p(answer | corrupted, one state restored) - p(answer | corrupted);
total effect TE = p(answer | clean) - p(answer | corrupted).

Severed paths (ROME Figure 2; `causal_trace_frozen_mlp_attn` in ROME's code): restore one hidden
state at (layer, position) while the MLP (or attention) outputs at that position stay frozen at
their corrupted values in every layer, so the restored state reaches the answer only through the
other component: "resid-sever-mlp" and "resid-sever-attn". The drop from "resid" to
"resid-sever-mlp" is what the later MLPs at that position contribute to the recovery.

All restorations of one prompt run as rows of a few batched forwards: each row has its own
(kind, layer, position) and its own noise sample, applied through hooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ffnlab.device import module_device
from ffnlab.errors import FFNLabError, unknown
from ffnlab.model.hooks import Hooked, capture, hooks
from ffnlab.model.names import block_hook

SITES = {"resid": "hook_resid_post", "mlp": "ffn.hook_out", "attn": "attn.hook_out"}  # in each block
SEVERED = {"resid-sever-mlp": "mlp", "resid-sever-attn": "attn"}  # kind -> component frozen at its corrupted value
KINDS = (*SITES, *SEVERED)


@dataclass
class Trace:
    """One prompt's trace. `effects[kind]` is (L, P): IE at each layer and traced position."""

    tokens: list[int]
    subject: tuple[int, int]  # [start, stop) token positions
    answer: int
    positions: list[int]
    p_clean: float
    p_corrupt: float
    effects: dict[str, Tensor]
    window: int

    @property
    def total_effect(self) -> float:
        return self.p_clean - self.p_corrupt


@torch.no_grad()
def embedding_std(model: Hooked, tokens: Tensor) -> float:
    """Standard deviation of the embeddings (`hook_embed`) over a body of text (B, T)."""
    with capture(model, ["hook_embed"]) as cache:
        model(tokens.to(module_device(model)))
    return float(cache["hook_embed"].float().std())


def default_window(n_layers: int) -> int:
    """ROME's window of 10 layers in 48-layer GPT-2 XL, scaled to the model's depth."""
    return max(1, round(10 * n_layers / 48))


def rome_window(layer: int, window: int, n_layers: int) -> range:
    """The layers restored together around `layer`, as ROME's `trace_important_window`: clamped at the
    edges (so the first and last layers get smaller windows), not shifted to keep its size."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def _prob(model: Hooked, batch: Tensor, answer: int) -> Tensor:
    return model(batch)[:, -1].float().softmax(-1)[:, answer]


@torch.no_grad()
def trace(model: Hooked, tokens: Sequence[int] | Tensor, subject: tuple[int, int], answer: int, noise: float,
          kinds: Sequence[str] = ("resid", "mlp", "attn"), positions: Sequence[int] | None = None,
          window: int | None = None, samples: int = 5, seed: int = 0, batch_size: int = 256) -> Trace:
    """Trace one prompt. `noise` is the noise's standard deviation (3 x `embedding_std`, ROME)."""
    if not model.causal:
        raise FFNLabError("causal tracing reads the prediction at the last position: it needs a causal model")
    tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
    t, n_layers, device = len(tokens), model.n_layers, module_device(model)
    s0, s1 = subject
    if not 0 <= s0 < s1 <= t:
        raise FFNLabError(f"subject span {subject} is not inside the prompt's {t} tokens")
    for kind in kinds:
        if kind not in KINDS:
            raise unknown("trace kind", kind, KINDS)
    positions = list(range(t)) if positions is None else [p % t for p in positions]
    window = default_window(n_layers) if window is None else window
    if window < 1:
        raise FFNLabError(f"the restoration window must be at least 1 layer, got {window}")
    restored = {SITES["resid" if k in SEVERED else k] for k in kinds}
    names = sorted({block_hook(i, site) for site in restored for i in range(n_layers)})
    with capture(model, names + ["hook_embed"]) as clean:
        p_clean = float(_prob(model, tokens[None].to(device), answer)[0])
    d = clean["hook_embed"].shape[-1]
    g = torch.Generator().manual_seed(seed)
    bank = (torch.randn(samples, s1 - s0, d, generator=g) * noise).to(device)  # one sample per row index % samples
    # the corrupted run of every sample: its probability, and the states the severed kinds freeze
    frozen = sorted({block_hook(i, SITES[SEVERED[k]]) for k in kinds if k in SEVERED for i in range(n_layers)})
    with capture(model, frozen) as corrupt, hooks(model, {"hook_embed": _corrupt(bank, s0, s1)}):
        p_corrupt = float(_prob(model, tokens[None].expand(samples, t).to(device), answer).mean())

    # rows: `samples` rows per (kind, layer, position); each row lists (hook, position, frozen?) to put back
    conditions = [(k, layer, p) for k in kinds for layer in range(n_layers) for p in positions]
    plan: list[tuple[int, list[tuple[str, int, bool]]]] = []
    for kind, layer, p in conditions:
        if kind in SITES and kind != "resid":
            edits = [(block_hook(i, SITES[kind]), p, False) for i in rome_window(layer, window, n_layers)]
        else:
            edits = [(block_hook(layer, SITES["resid"]), p, False)]
        if kind in SEVERED:  # layers up to `layer` are already corrupted there: freezing them changes nothing
            edits += [(block_hook(i, SITES[SEVERED[kind]]), p, True) for i in range(layer + 1, n_layers)]
        plan += [(s, edits) for s in range(samples)]
    probs = torch.empty(len(plan))
    for start in range(0, len(plan), batch_size):
        rows = plan[start:start + batch_size]
        sample = torch.tensor([s for s, _ in rows], device=device)
        where: dict[str, list[tuple[int, int, Tensor]]] = defaultdict(list)
        for r, (s, edits) in enumerate(rows):
            for name, p, freeze in edits:
                where[name].append((r, p, corrupt[name][s, p] if freeze else clean[name][0, p]))
        hooked = {"hook_embed": _corrupt(bank[sample], s0, s1)}
        hooked.update({name: _put(*zip(*put)) for name, put in where.items()})
        with hooks(model, hooked):
            probs[start:start + len(rows)] = _prob(model, tokens[None].expand(len(rows), t).to(device), answer)
    ie = probs.view(len(conditions), samples).mean(1) - p_corrupt
    effects = {k: ie[i * n_layers * len(positions):(i + 1) * n_layers * len(positions)].view(
        n_layers, len(positions)) for i, k in enumerate(kinds)}
    return Trace(tokens.tolist(), (s0, s1), answer, positions, p_clean, p_corrupt, effects, window)


def _corrupt(noise: Tensor, s0: int, s1: int):
    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[:, s0:s1] += noise.to(act.dtype)
        return act
    return edit


def _put(rows: tuple[int, ...], pos: tuple[int, ...], values: tuple[Tensor, ...]):
    """Set act[rows[i], pos[i]] = values[i] (a clean or a frozen corrupted state)."""
    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        r, p = torch.tensor(rows, device=act.device), torch.tensor(pos, device=act.device)
        act[r, p] = torch.stack(values).to(act.device, act.dtype)
        return act
    return edit


POSITION_GROUPS = ("first subject", "middle subject", "last subject", "first after", "further", "last")


def position_group(pos: int, subject: tuple[int, int], length: int) -> str:
    """ROME's grouping of token positions, so traces of different prompts can be averaged."""
    s0, s1 = subject
    if pos == length - 1:
        return "last"
    if pos == s1 - 1:
        return "last subject"
    if pos == s0:
        return "first subject"
    if s0 < pos < s1:
        return "middle subject"
    if pos == s1:
        return "first after"
    return "further"


# -- facts ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FactPrompt:
    """A prompt's tokens, the subject's token span and the answer's first token."""

    text: str
    tokens: tuple[int, ...]
    subject: tuple[int, int]
    answer: int


def shipped_facts() -> list[dict]:
    """The fact set shipped with ffnlab (`analysis/facts.json`): subject-relation-object triples, each as a
    dict with the canonical "prompt", "subject", "answer" (with its leading space), "relation" and
    "paraphrases" (every template of the relation filled in, the canonical one first)."""
    import importlib.resources
    import json

    data = json.loads((importlib.resources.files("ffnlab.analysis") / "facts.json").read_text())
    out = []
    for f in data["facts"]:
        filled = [t.replace("{subject}", f["subject"]) for t in data["relations"][f["relation"]]["templates"]]
        out.append({"prompt": filled[0], "subject": f["subject"], "answer": f["answer"], "relation": f["relation"],
                    "paraphrases": filled})
    return out


def fact_prompts(encode, facts: Sequence[dict]) -> list[FactPrompt]:
    """Tokenise facts with `encode(text) -> list[int]`; the subject span comes from the prefixes."""
    out = []
    for f in facts:
        prompt, subject = f["prompt"], f["subject"]
        at = prompt.find(subject)
        if at < 0:
            raise FFNLabError(f"fact {prompt!r}: subject {subject!r} is not in the prompt")
        tokens = encode(prompt)
        s0 = len(encode(prompt[:at].rstrip())) if at else 0
        s1 = len(encode(prompt[:at + len(subject)]))
        answer = encode(f["answer"])
        if not answer or s1 <= s0 or tokens[:s1] != encode(prompt[:at + len(subject)]):
            continue  # the subject does not end on a token boundary: no clean span to corrupt
        out.append(FactPrompt(prompt, tuple(tokens), (s0, s1), answer[0]))
    return out


@torch.no_grad()
def known_facts(model: Hooked, facts: Sequence[FactPrompt]) -> list[FactPrompt]:
    """The facts whose answer is the model's own top prediction."""
    device = module_device(model)
    return [f for f in facts if int(model(torch.tensor([f.tokens], device=device))[0, -1].argmax()) == f.answer]
