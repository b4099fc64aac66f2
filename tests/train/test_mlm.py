"""Encoders train as masked LMs automatically (BERT's objective on plain token data)."""

from __future__ import annotations

import math

from ffnlab.model import ModelConfig
from ffnlab.train import TrainConfig, train


def test_encoder_trains_as_masked_lm(char_data, tmp_path):
    cfg = TrainConfig(steps=200, batch_size=32, seq_len=32, lr=5e-3, warmup=20, eval_every=50, eval_batches=8,
                      checkpoint_every=200, precision="fp32")
    model_cfg = ModelConfig(arch="encoder", vocab_size=char_data.vocab_size, d_model=64, n_layers=2, n_heads=4,
                            max_seq_len=32)
    result = train(model_cfg, cfg, char_data, tmp_path, progress=False)  # plain TokenData: MLM is applied
    losses = [h["val_loss"] for h in result.history]
    # a uniform guess costs log V; learning the character distribution alone saves ~1 nat here
    assert result.val_loss < math.log(char_data.vocab_size) - 0.9, losses
    assert losses == sorted(losses, reverse=True), losses  # held-out loss falls at every evaluation
