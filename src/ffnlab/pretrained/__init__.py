"""Real pretrained models (BERT, GPT-2, Llama; local checkpoints and GGUF) under ffnlab's hooks.

One small adapter per architecture says where each named activation lives in the Hugging
Face model, so the analyses run on pretrained models exactly as on ffnlab's own.
"""

from ffnlab.pretrained.base import PretrainedModel
from ffnlab.pretrained.load import ADAPTERS, available, checkpoint, describe, load
from ffnlab.pretrained.sources import PACKAGED

__all__ = ["ADAPTERS", "PACKAGED", "PretrainedModel", "available", "checkpoint", "describe", "load"]
