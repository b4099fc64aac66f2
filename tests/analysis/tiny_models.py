"""Small hand-built models the analysis tests share."""

import torch

from ffnlab.model import FFNConfig, Transformer, preset

V = D = 128


def orthogonal_model(seed: int = 0) -> Transformer:
    """Tied embeddings with orthogonal rows: the head reads a token's embedding back as that token."""
    torch.manual_seed(seed)
    m = Transformer(preset("tiny", vocab_size=V, d_model=D, n_layers=2, max_seq_len=32,
                           ffn=FFNConfig(kind="mlp", activation="gelu", d_ff=64))).eval()
    q, _ = torch.linalg.qr(torch.randn(V, D))
    with torch.no_grad():
        m.tok.weight.copy_(q * D ** 0.5)
    return m
