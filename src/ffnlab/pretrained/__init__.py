"""Real pretrained models of every common family (local checkpoints, GGUF, cached model ids) under ffnlab's hooks.

One adapter, driven by a small spec per family (`families.FAMILIES`), says where each named
activation lives in the Hugging Face model, so the analyses run on pretrained models exactly
as on ffnlab's own; `verify()` checks at load that every hook means what it says.
"""

from ffnlab.pretrained.base import PretrainedModel
from ffnlab.pretrained.families import FAMILIES, Family, family_of
from ffnlab.pretrained.load import ADAPTERS, available, checkpoint, describe, load, meta_model, open_meta
from ffnlab.pretrained.sources import PACKAGED

__all__ = ["ADAPTERS", "FAMILIES", "PACKAGED", "Family", "PretrainedModel", "available", "checkpoint", "describe",
           "family_of", "load", "meta_model", "open_meta"]
