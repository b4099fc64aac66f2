"""The model: configs, FFN variants, attention, the Transformer, hook points, presets."""

from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.ffn import FFN, FFN_KINDS
from ffnlab.model.hooks import ablate, capture, hooks, patch, scale
from ffnlab.model.presets import PRESETS, preset
from ffnlab.model.sizing import count_params, match_d_ff, match_depth, match_width
from ffnlab.model.transformer import Transformer, cross_entropy

__all__ = ["FFN", "FFN_KINDS", "FFNConfig", "ModelConfig", "PRESETS", "Transformer", "ablate", "capture",
           "count_params", "cross_entropy", "hooks", "match_d_ff", "match_depth", "match_width", "patch",
           "preset", "scale"]
