"""The architectures ffnlab analyses: one small spec per family, and the one list of them.

A spec says where each part of a Hugging Face model lives; `ffnlab.pretrained.adapter`
turns it into ffnlab's hook names and `verify()` checks at load that they mean what they say.
Paths are dotted module names: global ones relative to the HF base model (`hf.base_model`),
per-layer ones relative to one block, head ones relative to the HF model itself. A *site*
is a path, `in:PATH` for the module's first input, or `PATH[k]` for element k of its output.

Block forms (what `verify()` checks; `hooks.py` names the activations):

    sequential  mid = pre + attn_out;  post = mid + ffn_out;  the FFN reads (a norm of) mid
    parallel    post = pre + attn_out + ffn_out;  the FFN reads (a norm of) pre, not mid;
                hook_resid_mid is defined as pre + attn_out: the stream without this block's FFN
    post-ln     mid = pre + attn_out;  ffn_in = norm1(mid);  post = ffn_in + ffn_out;
                the next block reads norm2(post) (BERT: mid and post are the sums entering the norms)

Norms after a sub-layer (Gemma 2/3, OLMo 2/3) are inside its output: `attn.hook_out` and
`ffn.hook_out` are what the sub-layer adds to the stream, and ffn_out = post_norm(down(ffn_post)).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ffnlab.errors import FFNLabError, unknown

BLOCKS = ("sequential", "parallel", "post-ln")


@dataclass(frozen=True)
class Family:
    """Where the parts of one architecture family live (see the module doc for paths and sites)."""

    name: str
    model_types: tuple[str, ...]  # HF config.model_type values this spec fits
    block: str
    layers: str  # the list of blocks
    embed: str  # site: the stream entering block 0
    final: str | None  # site: the stream entering the head (after the final norm); None: the last block's output
    final_norm: str | None  # pre-norm models: the norm the head reads through
    head: tuple[str, ...]  # modules from the last stream to logits, in order
    # per block
    attn: str  # attention module; its output[1] is the attention pattern
    attn_z: str  # the output projection: hook_z is its input
    attn_out: str  # site: what attention adds to the stream
    attn_norm: str | None  # the norm attention reads through (None: it reads the stream)
    ffn: str  # the FFN module: hook_in is its input
    ffn_norm: str | None  # the norm the FFN reads through (None: it reads the stream)
    ffn_in: str  # the first projection (gate for gated FFNs); its output is hook_pre
    ffn_up: str | None  # gated FFNs: the up projection (None: not gated)
    ffn_down: str
    ffn_act: str  # activation module
    ffn_out: str  # site: what the FFN adds to the stream
    ffn_post_norm: str | None = None  # a norm between the down projection and the stream
    pattern: str | None = None  # where the pattern is read, if not `attn`
    resid_mid: str | None = None  # post-ln: the sum entering the first norm
    resid_post: str | None = None  # post-ln: the sum entering the second norm
    out_norm: str | None = None  # post-ln: the norm after the FFN's sum
    fused_gate_up: bool = False  # gate and up in one projection: gate = first half (Phi-3)
    conv1d: bool = False  # projections store (in, out) weights (GPT-2's Conv1D)
    head_prefixes: tuple[str, ...] = ()  # encoders: weight names that mean a head is in the checkpoint
    causal: bool = True
    gguf: tuple[str, ...] = ()  # GGUF `general.architecture` names

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise unknown("block form", self.block, BLOCKS)

    @property
    def gated(self) -> bool:
        return self.ffn_up is not None or self.fused_gate_up


# Llama's layout: pre-RMSNorm blocks, a gated FFN (`mlp.gate_proj/up_proj/down_proj`); most decoders are variants
LLAMA = Family("llama", ("llama",), "sequential", layers="layers", embed="embed_tokens", final="norm",
               final_norm="norm", head=("lm_head",), attn="self_attn", attn_z="self_attn.o_proj",
               attn_out="self_attn[0]", attn_norm="input_layernorm", ffn="mlp", ffn_norm="post_attention_layernorm",
               ffn_in="mlp.gate_proj", ffn_up="mlp.up_proj", ffn_down="mlp.down_proj", ffn_act="mlp.act_fn",
               ffn_out="mlp", gguf=("llama",))
# Gemma 2/3: a norm after each sub-layer, before the sum ("sandwich"), and one before the FFN
GEMMA2 = replace(LLAMA, name="gemma2", model_types=("gemma2", "gemma3_text"), gguf=("gemma2", "gemma3"),
                 attn_out="post_attention_layernorm", ffn_norm="pre_feedforward_layernorm",
                 ffn_out="post_feedforward_layernorm", ffn_post_norm="post_feedforward_layernorm")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    LLAMA,
    replace(LLAMA, name="mistral", model_types=("mistral",), gguf=("mistral",)),
    replace(LLAMA, name="qwen2", model_types=("qwen2",), gguf=("qwen2",)),
    replace(LLAMA, name="qwen3", model_types=("qwen3",), gguf=("qwen3",)),
    replace(LLAMA, name="gemma", model_types=("gemma",), gguf=()),
    GEMMA2,
    replace(LLAMA, name="olmo", model_types=("olmo",), gguf=()),
    # OLMo 2/3: Gemma 2's post-norms without the pre-norms: attention and the FFN read the raw stream
    replace(GEMMA2, name="olmo2", model_types=("olmo2", "olmo3"), gguf=(), attn_norm=None, ffn_norm=None),
    replace(LLAMA, name="phi3", model_types=("phi3",), gguf=("phi3",), ffn_in="mlp.gate_up_proj", ffn_up=None,
            fused_gate_up=True, ffn_act="mlp.activation_fn"),
    Family("gpt_neox", ("gpt_neox",), "parallel", layers="layers", embed="emb_dropout", final="final_layer_norm",
           final_norm="final_layer_norm", head=("lm_head",), attn="attention", attn_z="attention.dense",
           attn_out="attention[0]", attn_norm="input_layernorm", ffn="mlp", ffn_norm="post_attention_layernorm",
           ffn_in="mlp.dense_h_to_4h", ffn_up=None, ffn_down="mlp.dense_4h_to_h", ffn_act="mlp.act", ffn_out="mlp"),
    Family("gptj", ("gptj",), "parallel", layers="h", embed="drop", final="ln_f", final_norm="ln_f",
           head=("lm_head",), attn="attn", attn_z="attn.out_proj", attn_out="attn[0]", attn_norm="ln_1", ffn="mlp",
           ffn_norm="ln_1", ffn_in="mlp.fc_in", ffn_up=None, ffn_down="mlp.fc_out", ffn_act="mlp.act",
           ffn_out="mlp"),
    Family("gpt2", ("gpt2",), "sequential", layers="h", embed="drop", final="ln_f", final_norm="ln_f",
           head=("lm_head",), attn="attn", attn_z="attn.c_proj", attn_out="attn[0]", attn_norm="ln_1", ffn="mlp",
           ffn_norm="ln_2", ffn_in="mlp.c_fc", ffn_up=None, ffn_down="mlp.c_proj", ffn_act="mlp.act", ffn_out="mlp",
           conv1d=True, gguf=("gpt2",)),
    Family("bert", ("bert",), "post-ln", layers="encoder.layer", embed="embeddings",
           final=None, final_norm=None, head=("cls",), attn="attention", pattern="attention.self",
           attn_z="attention.output.dense", attn_out="attention.output.dense", attn_norm=None, ffn="intermediate",
           ffn_norm="attention.output.LayerNorm", ffn_in="intermediate.dense", ffn_up=None, ffn_down="output.dense",
           ffn_act="intermediate.intermediate_act_fn", ffn_out="output.dense",
           resid_mid="in:attention.output.LayerNorm", resid_post="in:output.LayerNorm", out_norm="output.LayerNorm",
           head_prefixes=("cls.", "lm_head."), causal=False),
    Family("distilbert", ("distilbert",), "post-ln", layers="transformer.layer", embed="embeddings",
           final=None, final_norm=None,
           head=("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"), attn="attention",
           attn_z="attention.out_lin", attn_out="attention[0]", attn_norm=None, ffn="ffn", ffn_norm="sa_layer_norm",
           ffn_in="ffn.lin1", ffn_up=None, ffn_down="ffn.lin2", ffn_act="ffn.activation", ffn_out="ffn",
           resid_mid="in:sa_layer_norm", resid_post="in:output_layer_norm", out_norm="output_layer_norm",
           head_prefixes=("vocab_",), causal=False),
)}

# RoBERTa keeps BERT's layout; only its MLM head has another name
FAMILIES["roberta"] = replace(FAMILIES["bert"], name="roberta", model_types=("roberta", "xlm-roberta"),
                              head=("lm_head",))


def family_of(model_type: object) -> Family:
    """The spec for an HF `model_type`; one line naming the supported ones otherwise."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    raise unknown("architecture", model_type, supported_types())


def family_for(config) -> Family:
    """The spec for an HF config: its family's, in the block form the config asks for (a GPT-NeoX
    checkpoint with `use_parallel_residual: false` has sequential blocks)."""
    fam = family_of(config.model_type)
    if fam.block == "parallel" and getattr(config, "use_parallel_residual", True) is False:
        return replace(fam, block="sequential")
    return fam


def supported_types() -> list[str]:
    return sorted(t for fam in FAMILIES.values() for t in fam.model_types)


def check_gguf_architecture(architecture: object) -> None:
    """A GGUF file's `general.architecture` must be one ffnlab reads; checked before any tensor is read."""
    known = sorted(a for fam in FAMILIES.values() for a in fam.gguf)
    if architecture not in known:
        raise FFNLabError(f"unknown GGUF architecture {architecture!r}: ffnlab reads GGUF files of "
                          f"{', '.join(known)} (those transformers' GGUF loader converts); checkpoint "
                          f"directories of {', '.join(supported_types())}")
