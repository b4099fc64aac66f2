import pytest
import torch

from ffnlab.analysis.ladder import LadderConfig, fit_layers, ladder
from ffnlab.analysis.moments import Moments
from ffnlab.analysis.rungs import parse_rung
from ffnlab.analysis.transcoder import Transcoder, TranscoderTrainer
from ffnlab.errors import FFNLabError
from ffnlab.model import FFNConfig, Transformer, preset

V = 256


def model_with(kind: str, d_ff: int = 96, scale: float = 30.0, seed: int = 0) -> Transformer:
    """A 2-layer decoder with FFN outputs and (tied) logits scaled up, so that replacing an FFN badly moves
    the prediction clearly more than float rounding does."""
    torch.manual_seed(seed)
    m = Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind=kind, d_ff=d_ff))).eval()
    with torch.no_grad():
        m.tok.weight.mul_(20)
        for block in m.blocks:
            block.ffn.fc_out.weight.mul_(scale)
    return m


def windows(n: int, seed: int, t: int = 24) -> torch.Tensor:
    return torch.randint(0, V, (n, t), generator=torch.Generator().manual_seed(seed))


def run(model, rungs, layers=(1,), fit=16, **cfg) -> dict:
    cfg = LadderConfig(rungs=tuple(rungs), layers=layers, last_n=(), bootstrap=200, **cfg)
    return ladder(model, windows(fit, 1), windows(8, 2), cfg, progress=False)


def rungs_of(res: dict, layer: int = 1) -> dict:
    return next(x for x in res["layers"] if x["layer"] == layer)["rungs"]


def test_affine_rung_recovers_an_exactly_linear_ffn_and_zero_ablation_does_not():
    r = rungs_of(run(model_with("linear"), ["affine", "mean"]))
    assert r["zero"]["kl"] > 1e-3 and abs(r["zero"]["delta_loss"]) > 0.05  # the FFN matters here
    assert r["affine"]["recovered"] == pytest.approx(1.0, abs=1e-4)
    assert r["affine"]["r2"] > 1 - 1e-6 and r["affine"]["kl"] < 1e-6
    assert r["zero"]["recovered"] == 0.0 and r["mean"]["r2"] < 0.5
    assert r["affine"]["flops"] == pytest.approx(2 * 64 * 64 / (2 * 2 * 64 * 96))


def with_massive_outputs(m: Transformer, layer: int = 1, scale: float = 3000.0) -> Transformer:
    """Layer `layer`'s (linear) FFN also writes one fixed vector, `scale` x its usual output norm, at
    position 0 of every window: the kind of massive output a few FFNs of real models write (Sun et al.
    2024), and not a function of the FFN's input that an affine map can fit."""
    spike = torch.randn(m.config.d_model, generator=torch.Generator().manual_seed(5))

    def add(_module, _args, out):
        out = out.clone()
        out[:, 0] += scale * out[:, 1:].norm(dim=-1).median() * spike / spike.norm()
        return out
    m.blocks[layer].ffn.fc_out.register_forward_hook(add)
    return m


def test_robust_affine_rung_recovers_a_linear_ffn_with_massive_outputs_where_the_plain_fit_does_not():
    r = rungs_of(run(with_massive_outputs(model_with("linear")), ["affine", "affine-robust"]))
    assert r["zero"]["delta_loss"] > 0.05
    assert r["affine-robust"]["recovered"] == pytest.approx(1.0, abs=1e-3) and r["affine-robust"]["kl"] < 1e-4
    assert abs(r["affine"]["recovered"] - 1) > 0.1 and r["affine"]["kl"] > 100 * max(r["affine-robust"]["kl"], 1e-9)
    assert r["affine"]["r2"] < 0.9  # (the robust rung's R² counts the kept outputs, so it says nothing here)
    res = run(with_massive_outputs(model_with("linear")), ["affine-robust"])
    share = next(x for x in res["layers"] if x["layer"] == 1)["neurons"]["massive_outputs"]
    assert share == pytest.approx(1 / 24)  # position 0 of the 24-token fit windows, and nothing else
    # without massive outputs nothing is kept from the FFN, and the robust fit is the plain one
    plain = rungs_of(run(model_with("linear"), ["affine", "affine-robust"]))
    assert plain["affine-robust"]["loss"] == pytest.approx(plain["affine"]["loss"], abs=1e-6)
    assert plain["affine-robust"]["flops"] == pytest.approx(plain["affine"]["flops"])


def test_rank_r_rung_recovers_a_rank_r_ffn_and_rank_r_minus_1_does_not():
    m = model_with("linear")
    with torch.no_grad():
        m.blocks[1].ffn.fc_in.weight[3:] = 0  # out = W_out[:, :3] W_in[:3] x + b: rank 3
    r = rungs_of(run(m, ["rank-3", "rank-2"]))
    assert r["rank-3"]["recovered"] == pytest.approx(1.0, abs=1e-4) and r["rank-3"]["r2"] > 1 - 1e-6
    assert abs(r["rank-2"]["recovered"] - 1) > 0.02 and r["rank-2"]["r2"] < 0.9
    assert r["rank-2"]["kl"] > 1e4 * max(r["rank-3"]["kl"], 1e-12)


def test_keeping_every_neuron_equals_the_original():
    r = rungs_of(run(model_with("swiglu"), ["topk-100", "prune-act-0", "prune-random-0", "topk-10"]))
    for name in ("topk-100", "prune-act-0", "prune-random-0"):
        assert r[name]["delta_loss"] == 0.0 and r[name]["kl"] == 0.0 and r[name]["r2"] == 1.0
        assert r[name]["recovered"] == 1.0
    assert r["topk-10"]["r2"] < 0.99 and r["topk-10"]["flops"] == pytest.approx(0.1, abs=0.01)


def sparse_relu_ffn(d: int = 16, f: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w_in, v = torch.randn(f, d, generator=g), torch.randn(f, d, generator=g)
    return lambda x: torch.relu(x @ w_in.T - 2.0) @ v  # ~3.5 of 12 neurons active per token


def test_topk_transcoder_recovers_a_hand_built_sparse_ffn():
    torch.manual_seed(0)
    ffn = sparse_relu_ffn()
    tc = Transcoder(16, 24, 8)
    trainer = TranscoderTrainer(tc, lr=1e-2)
    for _ in range(3):
        x = torch.randn(8192, 16)
        for i in range(0, len(x), 128):
            trainer.step(x[i:i + 128], ffn(x[i:i + 128]))
    x = torch.randn(4000, 16)
    linear = Moments.zeros(16, 16)
    linear.add(x, ffn(x))
    with torch.no_grad():
        r2 = 1 - (tc(x) - ffn(x)).square().sum() / (ffn(x) - ffn(x).mean(0)).square().sum()
    assert r2 > 0.97 and linear.r2(*linear.affine()) < 0.8  # the FFN is far from linear, the transcoder gets it
    assert (tc.encode(x) != 0).sum(-1).max() <= 8


def test_transcoder_rung_learns_a_sparse_ffn_inside_a_model():
    m = model_with("mlp", d_ff=96, scale=1.0)
    with torch.no_grad():  # 8 live neurons, each firing on a minority of tokens; the rest dead
        ffn = m.blocks[1].ffn
        ffn.fc_in.weight.normal_(0, 0.5)
        ffn.fc_in.bias.fill_(-1.0)
        ffn.fc_in.bias[8:] = -1e4
        ffn.fc_out.weight.normal_(0, 1.0)
    r = rungs_of(run(m, ["transcoder", "affine"], fit=48, transcoder_width=32, transcoder_k=8, transcoder_epochs=25,
                     transcoder_lr=1e-2))
    assert r["transcoder"]["r2"] > 0.9 and r["transcoder"]["r2"] > r["affine"]["r2"]


def test_moments_merge_exactly_and_fitting_memory_does_not_grow_with_tokens():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(600, 5, generator=g), torch.randn(5, 3, generator=g)
    y = x @ w + 0.5
    whole, a, b = Moments.zeros(5, 3), Moments.zeros(5, 3), Moments.zeros(5, 3)
    whole.add(x, y)
    a.add(x[:200], y[:200])
    b.add(x[200:], y[200:])
    merged = a.merge(b)
    assert all(torch.allclose(getattr(whole, k), getattr(merged, k), rtol=1e-12) for k in ("xx", "xy", "yy"))
    fit_w, fit_b = merged.affine(ridge=0)
    assert torch.allclose(fit_w, w.double(), atol=1e-6) and torch.allclose(fit_b, torch.full((3,), 0.5).double(),
                                                                         atol=1e-6)
    model = model_with("swiglu")
    cfg = LadderConfig(transcoder_width=32, transcoder_k=4, transcoder_epochs=1)

    def state_bytes(n_windows: int) -> int:
        fits, tcs = fit_layers(model, list(windows(n_windows, 3).split(8)), [0, 1], cfg, coact=True,
                               transcoders=True)
        assert fits[0].n == n_windows * 24
        return sum(t.numel() * t.element_size() for f in fits.values() for t in f.state_dict().values()) + sum(
            p.numel() * p.element_size() for tc in tcs.values() for p in tc.parameters())
    assert state_bytes(8) == state_bytes(64)


def test_fits_of_shards_calibrated_on_one_batch_merge_into_the_whole_fit_and_others_are_refused():
    model = model_with("swiglu")
    cfg = LadderConfig()
    batches = list(windows(32, 3).split(8))
    with torch.no_grad():  # one neuron writing 100x: a few tokens' outputs pass the massive bar
        model.blocks[1].ffn.fc_out.weight[:, 0] *= 100
    whole, _ = fit_layers(model, batches, [0, 1], cfg, coact=True, transcoders=False)
    first, _ = fit_layers(model, batches[:2], [0, 1], cfg, coact=True, transcoders=False, calibrate=batches[0])
    second, _ = fit_layers(model, batches[2:], [0, 1], cfg, coact=True, transcoders=False, calibrate=batches[0])
    for i in (0, 1):
        merged = first[i].merge(second[i])
        want, got = whole[i].state_dict(), merged.state_dict()
        assert want.keys() == got.keys() and merged.n == whole[i].n == 32 * 24
        for k in want:  # counts, maxima and thresholds exactly; sums and moments to float64 rounding
            assert torch.allclose(got[k], want[k], rtol=1e-10, atol=1e-9), k
        for k in ("above", "max_abs", "eps", "massive_bar", "pos_n"):
            assert torch.equal(getattr(merged, k), getattr(whole[i], k)), k
    assert 0 < whole[1].ordinary.n.item() < whole[1].n  # the massive bar is in use
    apart, _ = fit_layers(model, batches[2:], [0, 1], cfg, coact=True, transcoders=False)  # its own first batch
    with pytest.raises(FFNLabError, match="same batch"):
        fit_layers(model, batches[:2], [0, 1], cfg, coact=True, transcoders=False)[0][1].merge(apart[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_fit_on_a_gpu_matches_the_cpu_fit():
    model = model_with("swiglu")
    batches = list(windows(16, 3).split(8))
    cpu, _ = fit_layers(model, batches, [0, 1], LadderConfig(), coact=True, transcoders=False)
    gpu, _ = fit_layers(model.cuda(), [b.cuda() for b in batches], [0, 1], LadderConfig(), coact=True,
                        transcoders=False)
    for i in (0, 1):
        assert gpu[i].n == cpu[i].n and gpu[i].pos_sum.device.type == "cpu"
        assert torch.allclose(gpu[i].moments.xy, cpu[i].moments.xy, rtol=1e-3, atol=1e-3)  # GPU matmuls round apart


def test_resumed_ladder_equals_an_uninterrupted_one_and_other_settings_are_refused(tmp_path):
    model = model_with("swiglu")
    cfg = dict(rungs=("affine", "rank-4", "topk-25", "prune-weight-50", "moe-8x2", "resample", "drop-attn"),
               last_n=(1, 2), bootstrap=100)
    fit, ev = windows(16, 1), windows(8, 2)
    whole = ladder(model, fit, ev, LadderConfig(**cfg), out=tmp_path / "a", progress=False)
    ladder(model, fit, ev, LadderConfig(**cfg, layers=(1,)), out=tmp_path / "b", progress=False)  # "interrupted"
    done = (tmp_path / "b" / "layers" / "layer-1.json").stat().st_mtime_ns
    resumed = ladder(model, fit, ev, LadderConfig(**cfg), out=tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "layers" / "layer-1.json").stat().st_mtime_ns == done  # read back, not redone
    assert resumed["layers"] == whole["layers"] and resumed["last_n"] == whole["last_n"]
    drop = rungs_of(whole, 0)["drop-attn"]
    assert drop["recovered"] is None and drop["delta_loss"] != 0
    with pytest.raises(FFNLabError, match="other eval"):
        ladder(model, fit, windows(8, 5), LadderConfig(**cfg), out=tmp_path / "b", progress=False)


def test_bad_rungs_and_layers_are_user_errors():
    with pytest.raises(FFNLabError, match="accepted"):
        parse_rung("rank-x")
    with pytest.raises(FFNLabError, match="percent"):
        parse_rung("topk-150")
    with pytest.raises(FFNLabError, match="layers 0..1"):
        run(model_with("mlp"), ["affine"], layers=(5,))


def test_scorer_matches_the_materialised_kl_and_cross_entropy():
    from ffnlab.analysis.replay import Scorer

    class Logits(torch.nn.Module):
        causal, has_head = True, True

        def unembed(self, h):
            return h

    g = torch.Generator().manual_seed(0)
    z0 = 4 * torch.randn(3, 10, 97, generator=g)
    tokens = torch.randint(0, 97, (3, 10), generator=g)
    scorer = Scorer(Logits())
    ref = scorer.reference(z0)
    for z in (z0, z0 + 0.1 * torch.randn(z0.shape, generator=g), torch.randn(z0.shape, generator=g)):
        ce, kl = scorer.score(z, ref, tokens)
        logp0, logp = z0.log_softmax(-1), z.log_softmax(-1)
        want_kl = (logp0.exp() * (logp0 - logp)).sum(-1).mean(1)
        want_ce = -logp[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1).mean(1)
        torch.testing.assert_close(kl, want_kl, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ce, want_ce)
    assert float(scorer.score(z0, ref, tokens)[1].abs().max()) < 1e-6  # KL of the original to itself
