"""Hand-built 3-layer models that recall a fact, with the hook names of ffnlab's models.

Prompt: [filler, subject, relation, last]; the answer is the subject's attribute. The residual
stream is [one-hot token (V) | attribute (K)]. Layer 0 does nothing. Layer 1 looks the attribute
up at the subject position, in its MLP (`store="mlp"`: one ReLU unit per subject) or in its
attention (`store="attn"`: each position attends to itself, the value map is the lookup). Layer 2's
attention moves the attribute from the subject position to the last one, which the head reads.
"""

import torch
from torch import Tensor, nn

from ffnlab.model.hooks import HookPoint

K = 4  # subjects (and attributes)
SUBJECTS = list(range(K))
ANSWERS = list(range(K, 2 * K))
FILLER, RELATION, LAST = 2 * K, 2 * K + 1, 2 * K + 2
V = 2 * K + 3
D = V + K
SUBJECT_POS = 1


def prompt(k: int) -> Tensor:
    return torch.tensor([FILLER, SUBJECTS[k], RELATION, LAST])


class Attention(nn.Module):
    """Fixed pattern `attend(t)` (T, T) rows; out = pattern @ (x @ value)."""

    def __init__(self, value: Tensor, attend):
        super().__init__()
        self.value, self.attend = value, attend
        self.hook_pattern, self.hook_out = HookPoint(), HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        pattern = self.hook_pattern(self.attend(t).to(x)[None, None].expand(b, 1, t, t))  # (B, 1, T, T)
        return self.hook_out((pattern @ (x @ self.value)[:, None])[:, 0])


class MLP(nn.Module):
    def __init__(self, w_in: Tensor, bias: Tensor, w_out: Tensor):
        super().__init__()
        self.w_in, self.bias, self.w_out = w_in, bias, w_out
        self.hook_out = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_out(torch.relu(x @ self.w_in + self.bias) @ self.w_out)


class Block(nn.Module):
    def __init__(self, attn: Attention, ffn: MLP):
        super().__init__()
        self.attn, self.ffn = attn, ffn
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return self.hook_resid_post(x + self.ffn(x))


def self_attention(t: int) -> Tensor:
    return torch.eye(t)


def last_reads_subject(t: int) -> Tensor:
    pattern = torch.eye(t)
    pattern[t - 1] = 0
    pattern[t - 1, SUBJECT_POS] = 1
    return pattern


class FactModel(nn.Module):
    causal = True
    n_layers = 3

    def __init__(self, store: str):
        super().__init__()
        self.embed = nn.Embedding(V, V)  # the token dims only: the noise never lands on the attribute dims
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(V))
        self.hook_embed = HookPoint()
        none_v, none_in, none_out = torch.zeros(D, D), torch.zeros(D, 1), torch.zeros(1, D)
        lookup = torch.zeros(D, D)  # subject one-hot -> attribute dims
        for k in range(K):
            lookup[SUBJECTS[k], V + k] = 1.0
        copy = torch.zeros(D, D)  # attribute dims only
        copy[V:, V:] = torch.eye(K)
        write = torch.zeros(K, D)  # hidden unit k -> attribute dim k
        write[:, V:] = 2 * torch.eye(K)
        if store == "mlp":
            layer1 = Block(Attention(none_v, self_attention), MLP(lookup[:, V:].clone(), torch.full((K,), -0.5), write))
        else:
            layer1 = Block(Attention(lookup, self_attention), MLP(none_in, torch.zeros(1), none_out))
        self.blocks = nn.ModuleList([
            Block(Attention(none_v, self_attention), MLP(none_in, torch.zeros(1), none_out)),
            layer1,
            Block(Attention(copy, last_reads_subject), MLP(none_in, torch.zeros(1), none_out)),
        ])

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.hook_embed(self.embed(tokens))
        x = torch.cat([x, x.new_zeros(*x.shape[:2], K)], -1)
        for block in self.blocks:
            x = block(x)
        logits = torch.full((*x.shape[:2], V), 0.0)
        logits[..., ANSWERS] = 8 * x[..., V:]
        return logits
