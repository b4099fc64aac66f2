"""Config parsing under arbitrary input: a config, or one FFNLabError — never another exception (issue 16.6)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import json_values, settings_of
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, ModelConfig
from ffnlab.train import TrainConfig

pytestmark = pytest.mark.fuzz
MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]
FFN_FIELDS = [f.name for f in dataclasses.fields(FFNConfig)]
TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
# values near the valid ones, so that some configs get past the type checks
near = st.one_of(json_values, st.integers(-2, 300), st.floats(-1, 2), st.sampled_from(
    ["mlp", "swiglu", "moe", "gelu", "relu", "decoder", "encoder", "rmsnorm", "rotary", "bf16", "fp32"]))


@given(settings_of(MODEL_FIELDS, near), st.one_of(settings_of(FFN_FIELDS, near), json_values))
def test_model_config_from_any_dict(d, ffn):
    try:
        cfg = ModelConfig.from_dict({**d, "ffn": ffn})
    except FFNLabError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@given(st.one_of(settings_of(TRAIN_FIELDS, near), json_values))
def test_train_config_from_any_dict(d):
    try:
        cfg = TrainConfig.from_dict(d)
    except FFNLabError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert all(type(getattr(cfg, f)) is not bool for f in ("seed", "steps", "lr"))
