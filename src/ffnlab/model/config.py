"""Frozen, typed configs for the model and its FFN, validated on construction.

A variant is a string (`FFNConfig(kind="swiglu")`); configs round-trip through JSON
and are saved beside every checkpoint and result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ffnlab.errors import FFNLabError, check_field_types, unknown

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "relu2", "identity", "sigmoid")
ARCHS = ("decoder", "encoder")
NORMS = ("layernorm", "rmsnorm", "none")
NORM_POSITIONS = ("pre", "post")
POSITIONS = ("learned", "rotary", "none")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise FFNLabError(message)


@dataclass(frozen=True)
class FFNConfig:
    """One FFN layer. `kind` names a registered variant (see `ffnlab.model.ffn.FFN_KINDS`).

    Width is `d_ff` when given, else `round(ratio * d_model)`. `activation` is used by
    `mlp`, `lowrank` and by the inner FFN of `shared` and `moe`; gated kinds fix their own.
    """

    kind: str = "mlp"
    activation: str = "gelu"
    d_ff: int | None = None
    ratio: float = 4.0
    bias: bool = True
    inner: str = "mlp"  # the FFN kind that `shared` shares and `moe` uses as experts
    width_mult: float = 1.0  # `shared`: one FFN this many times wider ("one wide FFN")
    n_experts: int = 8
    top_k: int = 2
    capacity_factor: float | None = None  # `moe`: None = no token dropping
    aux_loss_coef: float = 0.01
    rank: int | None = None  # `lowrank`: rank of each factorised projection

    def __post_init__(self) -> None:
        from ffnlab.model.ffn import FFN_KINDS  # the registry is the one source of kinds

        check_field_types(self)
        if self.kind not in FFN_KINDS:
            raise unknown("ffn kind", self.kind, FFN_KINDS)
        if self.activation not in ACTIVATIONS:
            raise unknown("activation", self.activation, ACTIVATIONS)
        basic = [k for k in FFN_KINDS if k not in ("shared", "moe", "none")]
        if self.inner not in basic:
            raise unknown("inner ffn kind", self.inner, basic)
        _check(self.d_ff is None or self.d_ff > 0, f"d_ff must be a positive integer, got {self.d_ff}")
        _check(self.ratio > 0, f"ffn ratio must be positive, got {self.ratio}")
        _check(self.width_mult > 0, f"width_mult must be positive, got {self.width_mult}")
        _check(self.n_experts >= 1, f"n_experts must be >= 1, got {self.n_experts}")
        _check(1 <= self.top_k <= self.n_experts,
               f"top_k must be between 1 and n_experts={self.n_experts}, got {self.top_k}")
        _check(self.capacity_factor is None or self.capacity_factor > 0,
               f"capacity_factor must be positive or None, got {self.capacity_factor}")
        _check(self.rank is None or self.rank > 0, f"rank must be a positive integer, got {self.rank}")
        _check(self.aux_loss_coef >= 0, f"aux_loss_coef must be >= 0, got {self.aux_loss_coef}")

    def width(self, d_model: int) -> int:
        """Hidden width F of one FFN (of one expert for `moe`)."""
        if self.kind == "none":
            return 0
        base = self.d_ff if self.d_ff is not None else max(1, round(self.ratio * d_model))
        return max(1, round(base * self.width_mult)) if self.kind == "shared" else base

    def replace(self, **changes: Any) -> FFNConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig:
    """A Transformer encoder or decoder. Shapes: B batch, T positions, D = d_model, V = vocab."""

    arch: str = "decoder"
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 128
    ffn: FFNConfig = field(default_factory=FFNConfig)
    ffn_overrides: tuple[tuple[int, FFNConfig], ...] = ()  # (layer, config) pairs
    norm: str = "layernorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    positions: str = "learned"
    rotary_base: float = 10000.0
    attn_bias: bool = True
    attn_skip: bool = True
    ffn_skip: bool = True
    final_norm: bool = True  # pre-LN: a norm before the head
    embed_norm: bool = False  # BERT: a norm after the embeddings
    type_vocab_size: int = 0  # BERT: token-type embeddings
    pooler: bool = False  # BERT: tanh pooler on the first token
    lm_head: bool = True  # decoder: next-token head; encoder: MLM head
    tie_embeddings: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        _check(isinstance(self.ffn, FFNConfig), f"ffn must be an FFN config table, got {self.ffn!r}")
        if self.arch not in ARCHS:
            raise unknown("arch", self.arch, ARCHS)
        if self.norm not in NORMS:
            raise unknown("norm", self.norm, NORMS)
        if self.norm_position not in NORM_POSITIONS:
            raise unknown("norm position", self.norm_position, NORM_POSITIONS)
        if self.positions not in POSITIONS:
            raise unknown("positions", self.positions, POSITIONS)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, f"{name} must be a positive integer, got {value!r}")
        _check(self.d_model % self.n_heads == 0,
               f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        _check(self.positions != "rotary" or (self.d_model // self.n_heads) % 2 == 0,
               "rotary positions need an even head dimension")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.norm_eps > 0, f"norm_eps must be positive (e.g. 1e-5), got {self.norm_eps}")
        _check(self.rotary_base > 0, f"rotary_base must be positive, got {self.rotary_base}")
        _check(self.type_vocab_size >= 0, "type_vocab_size must be >= 0")
        layers = [layer for layer, _ in self.ffn_overrides]
        _check(len(set(layers)) == len(layers), f"ffn_overrides names a layer twice: {layers}")
        for layer, cfg in self.ffn_overrides:
            _check(0 <= layer < self.n_layers,
                   f"ffn override for layer {layer}, but layers are 0..{self.n_layers - 1}")
            _check(isinstance(cfg, FFNConfig), "ffn_overrides must pair layer indices with FFNConfig")
        if not self.ffn_skip:
            _check(all(self.layer_ffn(i).kind != "none" for i in range(self.n_layers)),
                   "ffn_skip=False needs an FFN in every layer (kind 'none' would zero the stream)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def causal(self) -> bool:
        return self.arch == "decoder"

    def layer_ffn(self, layer: int) -> FFNConfig:
        """The FFN config of one layer, after per-layer overrides."""
        return dict(self.ffn_overrides).get(layer, self.ffn)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def with_ffn(self, **changes: Any) -> ModelConfig:
        return self.replace(ffn=self.ffn.replace(**changes))

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ffn_overrides"] = [[layer, dataclasses.asdict(cfg)] for layer, cfg in self.ffn_overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        _check(isinstance(d, dict), f"a model config must be a table of settings, got {d!r}")
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise unknown("model config field", extra[0], names)
        if "ffn" in d:
            d["ffn"] = ffn_from_dict(d["ffn"])
        if "ffn_overrides" in d:
            pairs = d["ffn_overrides"]
            _check(isinstance(pairs, (list, tuple)) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
                for p in pairs), f"ffn_overrides must be a list of [layer, ffn table] pairs, got {pairs!r}")
            d["ffn_overrides"] = tuple((layer, ffn_from_dict(c)) for layer, c in pairs)
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def ffn_from_dict(d: dict[str, Any] | FFNConfig) -> FFNConfig:
    if isinstance(d, FFNConfig):
        return d
    _check(isinstance(d, dict), f"an ffn config must be a table of settings, got {d!r}")
    names = {f.name for f in dataclasses.fields(FFNConfig)}
    extra = sorted(set(d) - names)
    if extra:
        raise unknown("ffn config field", extra[0], names)
    return FFNConfig(**d)
