"""The load-time check: on a sample, every hook of an adapted model means what its name says.

Identities checked, each as the largest relative error over all blocks (see
`ffnlab.pretrained.families` for the block forms):

    logits with hooks = logits without;  hook_embed = resid_pre of block 0
    resid_mid = resid_pre + attn_out
    resid_post = resid_mid + ffn_out (sequential, parallel) or ffn_in + ffn_out (post-ln)
    ffn_in = norm(the stream the FFN reads): resid_mid (sequential, post-ln) or resid_pre (parallel)
    ffn_pre = in(ffn_in);  ffn_post = act(ffn_pre) [* up(ffn_in)];  ffn_out = [post_norm](down(ffn_post))
    resid_pre of block i+1 = resid_post of block i (post-ln: its norm)
    hook_final = final_norm(last resid_post) (post-ln: the last block's output)
    unembed(last stream) = logits (with soft-capping where the family has it)
    attention rows sum to 1, and are causal in decoders

A spec that points a hook at the wrong module, the wrong block form, the wrong activation or
the wrong half of a fused projection breaks at least one of them; the model is then refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ffnlab.errors import FFNLabError
from ffnlab.model.hooks import capture
from ffnlab.model.names import all_hooks, block_hook


def _rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| relative to max |b| (at least 1)."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def _worst(errors: dict[str, float], key: str, value: float) -> None:
    errors[key] = max(errors.get(key, 0.0), value)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return torch.nn.functional.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))


def _apply(module, x: Tensor) -> Tensor:
    return x if module is None else module(x)


def ffn_errors(model, i: int, c, errors: dict[str, float]) -> None:
    """The FFN of block i computes what its hooks say: pre, post and out from ffn_in."""
    fam, w = model.family, model.ffn_weights(i)
    x, pre, post = c[block_hook(i, "ffn.hook_in")], c[block_hook(i, "ffn.hook_pre")], c[block_hook(i, "ffn.hook_post")]
    first = "gate" if fam.gated else "in"
    _worst(errors, "ffn_pre = in(ffn_in)", _rel(pre, _linear(x, w[first], w[f"{first}_bias"])))
    act = model.ffn_act(i)(pre)
    if fam.gated:
        act = act * _linear(x, w["up"], w["up_bias"])
    _worst(errors, "ffn_post = act(ffn_pre) [* up(ffn_in)]", _rel(post, act))
    down = _apply(model.part(i, fam.ffn_post_norm), _linear(post, w["down"], w["down_bias"]))
    _worst(errors, "ffn_out = down(ffn_post)", _rel(c[block_hook(i, "ffn.hook_out")], down))


def block_errors(model, i: int, c, errors: dict[str, float]) -> None:
    """The residual identities of block i in its family's block form."""
    fam = model.family

    def h(site: str) -> Tensor:
        return c[block_hook(i, site)]
    _worst(errors, "resid_mid = resid_pre + attn_out", _rel(h("hook_resid_mid"), h("hook_resid_pre") + h("attn.hook_out")))
    base = h("ffn.hook_in") if fam.block == "post-ln" else h("hook_resid_mid")
    _worst(errors, "resid_post = stream + ffn_out", _rel(h("hook_resid_post"), base + h("ffn.hook_out")))
    read = h("hook_resid_pre") if fam.block == "parallel" else h("hook_resid_mid")
    _worst(errors, f"ffn_in = norm({'resid_pre' if fam.block == 'parallel' else 'resid_mid'})",
           _rel(h("ffn.hook_in"), _apply(model.part(i, fam.ffn_norm), read)))
    out_norm = model.part(i, fam.out_norm)
    if i + 1 < model.n_layers:
        _worst(errors, "resid_pre[i+1] = resid_post[i]",
               _rel(c[block_hook(i + 1, "hook_resid_pre")], _apply(out_norm, h("hook_resid_post"))))


def verify(model, tokens: Tensor | None = None) -> dict[str, float]:
    """Check the identities of the module doc on `tokens` (default: 2 x 12 random ids); returns the
    largest relative error of each, or raises FFNLabError naming the first that fails."""
    if tokens is None:
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, model.vocab_size, (2, 12), generator=g).to(model._device())
    tol = 1e-4 if model._dtype() == torch.float32 else 3e-2
    n = model.n_layers
    names = [h for h in all_hooks(n) if not h.endswith("hook_pattern")]
    errors: dict[str, float] = {}
    with torch.no_grad():
        plain = model(tokens)
        with capture(model, names, device=None) as c:
            hooked = model(tokens)
        with capture(model, [block_hook(0, "attn.hook_pattern")]) as p:  # eager attention: its own forward
            model(tokens)
        errors["logits with hooks"] = _rel(hooked, plain)
        errors["hook_embed = resid_pre[0]"] = _rel(c["hook_embed"], c[block_hook(0, "hook_resid_pre")])
        for i in range(n):
            block_errors(model, i, c, errors)
            ffn_errors(model, i, c, errors)
        last = c[block_hook(n - 1, "hook_resid_post")]
        fam = model.family
        expected_final = _apply(model.part(n - 1, fam.out_norm), last) if fam.block == "post-ln" else \
            _apply(None if fam.final_norm is None else model.body.get_submodule(fam.final_norm), last)
        errors["hook_final = final_norm(last stream)"] = _rel(c["hook_final"], expected_final)
        pattern = p[block_hook(0, "attn.hook_pattern")].float()
        errors["pattern rows sum to 1"] = (pattern.sum(-1) - 1).abs().max().item()
        if model.causal:
            errors["pattern is causal"] = pattern.triu(1).abs().max().item()
        if model.has_head:
            stream = c["hook_final"] if fam.block == "post-ln" else last
            errors["unembed(last stream) = logits"] = _rel(model.unembed(stream), plain)
    bad = {k: v for k, v in errors.items() if not v <= tol}
    if bad:
        k, v = next(iter(bad.items()))
        raise FFNLabError(f"{model.meta.get('name', model.architecture)}: hook check failed: {k} "
                          f"(relative error {v:.2g} > {tol:g}); this checkpoint is not supported")
    return errors
