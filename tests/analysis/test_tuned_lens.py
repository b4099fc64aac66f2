import pytest
import torch

from ffnlab.analysis.tuned_lens import LensConfig, Translators, lens_kl, lens_sites, train_translators
from ffnlab.model.config import FFNConfig, ModelConfig
from ffnlab.model.transformer import Transformer

V = 24


def sequences(n: int, seed: int) -> torch.Tensor:
    """Each sequence counts up from a random start with step 1 or 2 (mod V): learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    start, step = torch.randint(V, (n, 1), generator=g), torch.randint(1, 3, (n, 1), generator=g)
    return (start + step * torch.arange(16)) % V


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=V, d_model=32, n_layers=3, n_heads=4, max_seq_len=16,
                                ffn=FFNConfig(kind="mlp", ratio=2.0)))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for i in range(100):
        x = sequences(16, i)
        loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).reshape(-1, V), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss < 1.0  # the toy model has learned the task (uniform: log 24 = 3.2 nats)
    return m.eval()


def test_tuned_lens_lowers_kl_on_held_out_text(trained, tmp_path):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    train = [sequences(8, 1000 + i) for i in range(4)]
    lens, alias, history = train_translators(trained, train, LensConfig(steps=60), cache=tmp_path / "t.safetensors")
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert history[-1] < 0.5 * history[0]
    # pre-LN: the stream after FFN l is the stream before attention l + 1, one translator for both
    assert alias == {"blocks.0.hook_resid_post": "blocks.1.hook_resid_pre",
                     "blocks.1.hook_resid_post": "blocks.2.hook_resid_pre"}
    held_out = lens_kl(trained, sequences(12, 99), lens, alias, batch_size=5)
    logit, tuned = held_out.mean("logit", "mid"), held_out.mean("tuned", "mid")
    assert all(t < 0.7 * lg for t, lg in zip(tuned, logit))  # before every FFN, on held-out sequences
    assert held_out.mean("logit", "post")[-1] == pytest.approx(0.0, abs=1e-5)  # the last stream is the output
    assert held_out.mean("tuned", "post")[-1] < 1e-3  # and its translator stays (near) the identity
    # a second call loads the cached translators instead of training
    again, _, hist2 = train_translators(trained, train, LensConfig(steps=60), cache=tmp_path / "t.safetensors")
    assert hist2 == [] and torch.equal(again.weight, lens.weight)


def test_identity_translators_are_the_logit_lens(trained):
    x = sequences(4, 5)
    sites, alias = lens_sites(trained, x[:1])
    r = lens_kl(trained, x, Translators(sites, 32), alias)
    for where in ("pre", "mid", "post"):
        assert r.mean("tuned", where) == pytest.approx(r.mean("logit", where), abs=1e-6)
    assert [sum(v) for v in r.drop("logit", "ffn")] == pytest.approx(
        [sum(a) - sum(b) for a, b in zip(r.kl["logit"]["mid"], r.kl["logit"]["post"])])


def test_translators_for_chosen_layers_only(trained, tmp_path):
    train = [sequences(8, 2000 + i) for i in range(2)]
    lens, alias, _ = train_translators(trained, train, LensConfig(steps=5), layers=[1, 2])
    assert lens.sites == ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.2.hook_resid_pre",
                          "blocks.2.hook_resid_mid", "blocks.2.hook_resid_post"]
    assert alias == {"blocks.1.hook_resid_post": "blocks.2.hook_resid_pre"}
    r = lens_kl(trained, sequences(3, 7), lens, alias, layers=[1, 2])
    full = lens_kl(trained, sequences(3, 7), Translators(*lens_sites(trained, train[0][:1])[:1], 32),
                   lens_sites(trained, train[0][:1])[1])
    assert r.layers == [1, 2] and r.mean("logit", "mid") == pytest.approx(full.mean("logit", "mid")[1:], abs=1e-6)
