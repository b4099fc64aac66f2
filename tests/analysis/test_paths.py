import pytest
import torch
from torch import nn

from ffnlab.analysis.paths import components, path_patching
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.hooks import HookPoint
from ffnlab.model.transformer import Transformer

V, D, A = 20, 32, 4  # attention writes only the first A dims of the stream; the embedding only the others


class Attn(nn.Module):
    """Causal running mean of the stream (input-dependent, mixes positions), written into dims [0, A)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(D, A, bias=False)
        self.hook_out = HookPoint()

    def forward(self, x):
        avg = x.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1)
        return self.hook_out(torch.cat([self.w(avg), torch.zeros(*x.shape[:2], D - A)], -1))


class FFN(nn.Module):
    """A ReLU MLP that reads either attention's dims (`reads=True`) or only the other dims."""

    def __init__(self, reads: bool):
        super().__init__()
        mask = torch.zeros(D)
        mask[:A] = 1
        self.register_buffer("mask", mask if reads else 1 - mask)
        self.up, self.down = nn.Linear(D, 64), nn.Linear(64, D)
        self.hook_out = HookPoint()

    def forward(self, x):
        return self.hook_out(self.down(torch.relu(self.up(x * self.mask))))


class Block(nn.Module):
    def __init__(self, reads: bool):
        super().__init__()
        self.attn, self.ffn = Attn(), FFN(reads)

    def forward(self, x):  # no norm: the FFN reads exactly resid_pre + attn_out
        mid = x + self.attn(x)
        return mid + self.ffn(mid)


class HandBuilt(nn.Module):
    n_layers = 1

    def __init__(self, reads: bool):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(V, D)
        with torch.no_grad():
            self.tok.weight[:, :A] = 0
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([Block(reads)])

    def forward(self, tokens):
        x = self.hook_embed(self.tok(tokens))
        for block in self.blocks:
            x = block(x)
        return x


def test_path_patching_says_whether_the_ffn_reads_its_attention():
    x, other = torch.randint(0, V, (6, 10)), torch.randint(0, V, (6, 10))
    reads = path_patching(HandBuilt(reads=True), x, other)
    blind = path_patching(HandBuilt(reads=False), x, other)
    assert reads.source == blind.source == ["hook_embed"]
    # an FFN that reads attention's dims: moved by attention's change, not by a same-size embedding change
    assert min(reads.attn[0]) > 0.01 and max(reads.earlier[0]) == 0.0
    assert min(reads.selectivity("earlier")[0]) == pytest.approx(1.0)
    assert min(reads.selectivity("random")[0]) > 0.2  # a random direction puts only ~sqrt(A/D) of it there
    # an FFN blind to attention's dims: patching the path does nothing, the control does
    assert max(blind.attn[0]) == 0.0 and min(blind.earlier[0]) > 0.01
    assert max(blind.selectivity("earlier")[0]) == pytest.approx(-1.0)
    assert max(blind.selectivity("random")[0]) < 0


def own_model(norm_position="pre"):
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=40, d_model=32, n_layers=3, n_heads=4, max_seq_len=16,
                                   norm_position=norm_position, ffn=FFNConfig(kind="mlp", ratio=2.0))).eval()


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_own_models_patching_from_the_same_input_changes_nothing(norm_position):
    m, x = own_model(norm_position), torch.randint(0, 40, (3, 12))
    same = path_patching(m, x, x, batch_size=2)
    assert all(v == 0.0 for layer in same.attn + same.earlier_raw for v in layer)
    other = path_patching(m, x, torch.randint(0, 40, (3, 12)), batch_size=2)
    assert all(len(layer) == 3 for layer in other.attn)
    assert min(min(layer) for layer in other.attn) > 0  # a different input moves every FFN through its attention
    # the control never uses attention of the same layer, only what was written before it
    assert other.source[0] == "hook_embed" and all(s in components(m, i) for i, s in enumerate(other.source))
    # norm-matched controls: same size as attention's change, so the relative changes are comparable
    assert all(-1 <= s <= 1 for layer in other.selectivity() for s in layer)


def test_a_subset_of_layers_gives_the_same_numbers_there():
    m, x, other = own_model(), torch.randint(0, 40, (3, 12)), torch.randint(0, 40, (3, 12))
    every, some = path_patching(m, x, other, seed=3), path_patching(m, x, other, seed=3, layers=[0, 2])
    assert some.measured == [0, 2] and every.measured == [0, 1, 2] and some.source == every.source
    assert some.attn[1] == [] and some.attn[2] == pytest.approx(every.attn[2])
    assert some.earlier[2] == pytest.approx(every.earlier[2])
