import pytest

from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, ModelConfig, preset


def test_json_round_trip_with_overrides():
    cfg = preset("tiny", ffn=FFNConfig(kind="swiglu", d_ff=96),
                 ffn_overrides=((1, FFNConfig(kind="none")),), positions="rotary", norm="rmsnorm")
    back = ModelConfig.from_json(cfg.to_json())
    assert back == cfg
    assert back.layer_ffn(1).kind == "none" and back.layer_ffn(0).kind == "swiglu"


@pytest.mark.parametrize("make, words", [
    (lambda: FFNConfig(kind="swigloo"), ["unknown ffn kind", "did you mean 'swiglu'", "known:"]),
    (lambda: FFNConfig(activation="tanh"), ["unknown activation", "known:"]),
    (lambda: FFNConfig(d_ff=-3), ["d_ff must be a positive integer"]),
    (lambda: FFNConfig(kind="moe", n_experts=4, top_k=5), ["top_k must be between 1 and n_experts=4"]),
    (lambda: ModelConfig(d_model=66, n_heads=4), ["d_model=66 must be divisible by n_heads=4"]),
    (lambda: ModelConfig(arch="seq2seq"), ["unknown arch", "known: decoder, encoder"]),
    (lambda: ModelConfig(n_layers=0), ["n_layers must be a positive integer"]),
    (lambda: ModelConfig(ffn=FFNConfig(kind="none"), ffn_skip=False), ["ffn_skip=False needs an FFN"]),
    (lambda: ModelConfig(n_layers=2, ffn_overrides=((5, FFNConfig()),)), ["layers are 0..1"]),
    (lambda: ModelConfig.from_dict({"d_modle": 64}), ["unknown model config field 'd_modle'", "d_model"]),
])
def test_bad_configs_say_what_is_accepted(make, words):
    with pytest.raises(FFNLabError) as err:
        make()
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_configs_are_frozen():
    cfg = preset("tiny")
    with pytest.raises(AttributeError):
        cfg.d_model = 3
