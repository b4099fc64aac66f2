"""Hook names, built in one place: `block_hook(3, "ffn.hook_post")` -> "blocks.3.ffn.hook_post".

The names themselves are documented in `ffnlab.model.hooks`; they are the same on ffnlab's own
models and on pretrained adapters.
"""

from __future__ import annotations

BLOCK_SITES = ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "attn.hook_out", "hook_resid_mid",
               "ffn.hook_in", "ffn.hook_pre", "ffn.hook_post", "ffn.hook_out", "hook_resid_post")
GLOBAL_SITES = ("hook_embed", "hook_final")


def block_hook(layer: int, site: str) -> str:
    """The name of `site` (one of BLOCK_SITES) in block `layer`."""
    return f"blocks.{layer}.{site}"


def all_hooks(n_layers: int) -> list[str]:
    """Every documented hook name of a model with `n_layers` blocks."""
    return [*GLOBAL_SITES, *(block_hook(i, s) for i in range(n_layers) for s in BLOCK_SITES)]
