"""The ladder's report sections: computed from a stored ladder, heatmap and frontier drawn."""

import math

import torch

from ffnlab.analysis.ladder import LadderConfig, ladder
from ffnlab.experiments.ladder import _frontier, cheapest, model_sections, model_statements
from ffnlab.model import FFNConfig, Transformer, preset
from ffnlab.report import figures


def test_sections_heatmap_and_frontier_come_from_the_ladder():
    torch.manual_seed(0)
    model = Transformer(preset("tiny", n_layers=2, ffn=FFNConfig(kind="swiglu", d_ff=96))).eval()
    g = torch.Generator().manual_seed(0)
    fit, ev = torch.randint(0, 256, (8, 16), generator=g), torch.randint(0, 256, (4, 16), generator=g)
    res = ladder(model, fit, ev, LadderConfig(rungs=("mean", "affine", "topk-100", "topk-10", "drop-attn"),
                                              last_n=(1, 2), bootstrap=50), progress=False)
    tables, series, est = model_sections("tiny", res)
    heat = next(s for s in series if s.kind == "heatmap")
    assert [ln.label for ln in heat.lines] == ["mean", "affine", "topk-100", "topk-10"]
    assert heat.lines[2].y == [1.0, 1.0]  # keeping every neuron recovers everything, in every layer
    grid = tables[0]
    assert grid.rows[1][1:] == [100 * res["layers"][1]["rungs"][ln.label]["recovered"] for ln in heat.lines]
    svg = figures.svg(heat, "fig-heat")
    assert svg.startswith("<svg") and "topk-10" in svg and "affine" in svg
    for s in series:
        assert figures.svg(s, "f").startswith("<svg")
    rungs = res["layers"][0]["rungs"]
    front = _frontier(rungs)
    assert [p[0] for p in front] == sorted(p[0] for p in front)
    assert all(b[1] > a[1] for a, b in zip(front, front[1:]))  # each costlier point recovers more
    name, flops = cheapest(rungs, 0.99)
    assert rungs[name]["recovered"] >= 0.99 and all(
        r["flops"] >= flops for r in rungs.values() if r["flops"] is not None and r["recovered"] >= 0.99)
    assert math.isclose(next(e for e in est if "median" in e.quantity).mean,
                        sorted(x["rungs"]["affine"]["recovered"] for x in res["layers"])[0] / 2
                        + sorted(x["rungs"]["affine"]["recovered"] for x in res["layers"])[1] / 2)
    # the layered answer's sentences carry the same numbers: affine under C3, the drops under C6
    linear, drops, *sparsity = model_statements("tiny", res)
    topk = [x["rungs"]["topk-10"]["recovered"] for x in res["layers"]]
    assert any("top 10% of FFN neurons" in t["text"] and f"in {sum(k >= 0.9 for k in topk)} of 2 layers" in t["text"]
               for t in sparsity)
    affine = [x["rungs"]["affine"]["recovered"] for x in res["layers"]]
    assert linear["claim"] == "C3" and f"in {sum(a >= 0.9 for a in affine)} of 2 layers" in linear["text"]
    worse = sum(x["rungs"]["zero"]["delta_loss"] > x["rungs"]["drop-attn"]["delta_loss"] for x in res["layers"])
    assert "claim" not in drops and f"attention in {worse} of 2 layers" in drops["text"]


def test_c3_section_points_to_the_ladder():
    from ffnlab.report.sections import claim_section

    assert 'href="#exp-pretrained-ladder"' in claim_section("C3", [], [], {"pretrained-ladder"})
    assert "pretrained-ladder</code> (not stored yet)" in claim_section("C3", [], [])
    assert "pretrained-ladder" not in claim_section("C4", [], [])


def test_the_robust_affine_statement_names_the_layers_it_rescues_and_those_it_does_not():
    def layer(i, affine, robust, massive):
        return {"layer": i, "rungs": {"affine": {"recovered": affine}, "affine-robust": {"recovered": robust}},
                "neurons": {"massive_outputs": massive, "active": 0.5, "dead": 0.0}}
    res = {"rungs": ["zero", "affine", "affine-robust"],
           "layers": [layer(0, 0.95, 0.96, 0.0), layer(1, -0.02, 1.01, 0.008), layer(2, 0.4, 0.5, 0.0)]}
    robust = next(s["text"] for s in model_statements("m", res) if "massive" in s["text"])
    assert "recovers >= 90% in 2 of 3 layers" in robust
    assert "rescues layer 1 (1: -2% -> 101%, massive outputs 0.8% of tokens)" in robust
    assert "On ordinary tokens the nonlinearity matters (robust fit < 90%) in layer 2." in robust
    res["layers"][1] = layer(1, 0.92, 0.93, 0.0)
    robust = next(s["text"] for s in model_statements("m", res) if "massive" in s["text"])
    assert "It rescues no layer. On ordinary tokens the nonlinearity matters (robust fit < 90%) in layer 2." in robust


def test_the_oracle_rung_is_left_out_of_the_cheapest_rung_and_the_frontier():
    rungs = {"affine-robust": {"flops": 0.13, "recovered": 1.0}, "affine": {"flops": 0.125, "recovered": 0.2},
             "topk-25": {"flops": 0.25, "recovered": 0.95}}
    assert cheapest(rungs, 0.9) == ("topk-25", 0.25)
    assert [p[2] for p in _frontier(rungs)] == ["affine", "topk-25"]
