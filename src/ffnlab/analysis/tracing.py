"""Causal tracing (Meng et al. 2022, ROME §2): where does a fact's recall run through?

Corrupt the subject tokens' embeddings (`hook_embed`) with Gaussian noise of 3x the
embedding standard deviation; then restore one clean state at a time — a whole hidden state
(`hook_resid_post`), or the FFN output (`ffn.hook_out`) or attention output (`attn.hook_out`)
over a window of layers around it — and measure how much of the answer's probability comes
back. Indirect effect IE = p(answer | corrupted, one state restored) - p(answer | corrupted);
total effect TE = p(answer | clean) - p(answer | corrupted).

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


def _window(layer: int, window: int, n_layers: int) -> range:
    start = max(0, layer - window // 2)
    return range(start, min(n_layers, start + window))


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
        if kind not in SITES:
            raise unknown("trace kind", kind, SITES)
    positions = list(range(t)) if positions is None else [p % t for p in positions]
    window = default_window(n_layers) if window is None else window
    if window < 1:
        raise FFNLabError(f"the restoration window must be at least 1 layer, got {window}")
    names = sorted({block_hook(i, SITES[k]) for k in kinds for i in range(n_layers)})
    with capture(model, names) as clean:
        p_clean = float(_prob(model, tokens[None].to(device), answer)[0])
    d = clean[names[0]].shape[-1]
    g = torch.Generator().manual_seed(seed)
    bank = (torch.randn(samples, s1 - s0, d, generator=g) * noise).to(device)  # one sample per row index % samples

    # rows: `samples` corrupted-only rows, then `samples` rows per (kind, layer, position)
    conditions = [(k, layer, p) for k in kinds for layer in range(n_layers) for p in positions]
    plan: list[tuple[int, list[tuple[str, int]]]] = [(s, []) for s in range(samples)]
    for kind, layer, p in conditions:
        restore = [(block_hook(i, SITES[kind]), p) for i in
                   ([layer] if kind == "resid" else _window(layer, window, n_layers))]
        plan += [(s, restore) for s in range(samples)]
    probs = torch.empty(len(plan))
    for start in range(0, len(plan), batch_size):
        rows = plan[start:start + batch_size]
        sample = torch.tensor([s for s, _ in rows], device=device)
        where: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for r, (_, restore) in enumerate(rows):
            for name, p in restore:
                where[name][0].append(r)
                where[name][1].append(p)
        edits = {"hook_embed": _corrupt(bank[sample], s0, s1)}
        edits.update({name: _restore(clean[name][0], r, p) for name, (r, p) in where.items()})
        with hooks(model, edits):
            probs[start:start + len(rows)] = _prob(model, tokens[None].expand(len(rows), t).to(device), answer)
    p_corrupt = float(probs[:samples].mean())
    ie = probs[samples:].view(len(conditions), samples).mean(1) - p_corrupt
    effects = {k: ie[i * n_layers * len(positions):(i + 1) * n_layers * len(positions)].view(
        n_layers, len(positions)) for i, k in enumerate(kinds)}
    return Trace(tokens.tolist(), (s0, s1), answer, positions, p_clean, p_corrupt, effects, window)


def _corrupt(noise: Tensor, s0: int, s1: int):
    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[:, s0:s1] += noise.to(act.dtype)
        return act
    return edit


def _restore(clean: Tensor, rows: list[int], pos: list[int]):
    r, p = torch.tensor(rows, device=clean.device), torch.tensor(pos, device=clean.device)

    def edit(act: Tensor) -> Tensor:
        act = act.clone()
        act[r, p] = clean[p].to(act.dtype)
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
