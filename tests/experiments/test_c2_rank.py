from pathlib import Path

import pytest

from ffnlab.experiments.c2_rank import c2_verdict, control_steps, deep_model, what_prevents
from ffnlab.experiments.common import SIZES, shortened, train_config
from ffnlab.experiments.registry import Context
from ffnlab.experiments.verdict import estimate
from ffnlab.results import ALL_VERDICTS, base_verdict


def test_rank_collapse_at_test_size(run_test_size):
    r = run_test_size("rank-collapse")
    assert base_verdict(r.verdict) in ALL_VERDICTS and r.criterion.direction == "<"
    rows = {(row[0], row[1]): row[2:] for row in r.tables[0].rows}
    n_layers = len(rows[("init", "full")])
    assert n_layers >= 4
    lines = {line.label: line.y for line in r.series[0].lines}  # at initialisation, by surgery
    # at initialisation pure attention loses rank with depth; the full block keeps it (Dong et al.)
    assert lines["attn-only"][-1] < 0.5 * lines["full"][-1]
    assert lines["attn-only"][-1] < lines["attn-only"][0]
    # surgery "full" on the trained full model is the built-and-trained full model itself
    assert rows[("trained", "full")] == rows[("built+trained", "full")]
    assert [e.quantity for e in r.estimates][0] == r.criterion.quantity
    assert "In these models" in r.reason  # the plain statement of what prevents collapse
    # the layered answer: at initialisation what prevents collapse is settled (Dong et al.); trained, suggested
    settled, suggested = r.extra["statements"]
    assert settled["level"] == "settled" and "at initialisation" in settled["text"] and "skip" in settled["text"]
    assert suggested["level"] == "suggested" and "in trained models" in suggested["text"]
    assert [d.version for d in r.deviations] == [3, 4, 5]  # changed after versions 2, 3 and 4 were seen
    across = r.tables[1].rows
    assert [row[0] for row in across] == ["init", "trained"] and len(across[0]) == n_layers + 1


def seeds(*values):
    return estimate("q", values)


@pytest.mark.parametrize("without_ffn, ffn_without_skip, expected", [
    ((0.1, 0.12, 0.09), (2.5, 2.7, 2.4), "supported"),        # the FFN keeps diversity with and without skips
    ((0.1, 0.12, 0.09), (0.2, 0.1, 0.3), "partly supported"),  # needed with skips, no help without them
    ((0.9, 0.95, 0.85), (2.5, 2.7, 2.4), "partly supported"),  # slows pure attention's collapse only
    ((0.9, 0.95, 0.85), (0.2, 0.1, 0.3), "not supported"),     # the skip does the work; the FFN does not help
])
def test_every_verdict_is_reachable(without_ffn, ffn_without_skip, expected):
    assert c2_verdict(seeds(*without_ffn), seeds(*ffn_without_skip))[0] == expected


def test_the_plain_statement_names_the_component():
    assert "neither component is needed" in what_prevents(0.7, 0.9, 0.8)  # nothing collapsed
    assert "the skip connection prevents collapse" in what_prevents(0.9, 1e-5, 1e-3)
    assert "the FFN does not slow it" in what_prevents(0.9, 1e-5, 1e-3)
    assert "the skip connection does not prevent collapse" in what_prevents(0.1, 0.2, 1e-3)
    assert "the FFN slows it" in what_prevents(0.1, 0.2, 1e-3)
    assert "the FFN prevents it" in what_prevents(0.1, 0.6, 1e-3)
    floored = what_prevents(0.9, 1e-6, 1e-6, floored=True)
    assert "both end below float precision" in floored and "does not slow" not in floored


def test_deep_models_have_the_sizes_depth_and_width():
    full = deep_model(Context(mode="full", seeds=(0,), results=Path("unused")), 128)
    assert (full.d_model, full.n_layers) == (SIZES["full"].deep_width, SIZES["full"].deep_layers)
    assert full.d_model == 48  # d=32 missed the bar (SIZES comment)
    test = deep_model(Context(mode="quick", seeds=(0,), results=Path("unused"), options={"size": "test"}), 128)
    assert (test.d_model, test.n_layers) == (SIZES["test"].deep_width, SIZES["test"].deep_layers)


def test_only_the_controls_train_shorter_and_only_where_the_size_says():
    full = Context(mode="full", seeds=(0,), results=Path("unused"))
    assert control_steps(full, "attn-only") == control_steps(full, "attn+ffn") == 500
    assert control_steps(full, "full") is None and control_steps(full, "attn+skip") is None
    test = Context(mode="quick", seeds=(0,), results=Path("unused"), options={"size": "test"})
    assert control_steps(test, "attn-only") is None
    cfg = train_config(full, 0)
    short = shortened(cfg, 500)  # the same schedule at a fifth of the length
    assert (short.steps, short.warmup, short.eval_every, short.checkpoint_every) == (500, 50, 50, 50)
    assert (cfg.warmup, cfg.eval_every) == (250, 250) and short.hold == cfg.hold and short.batch_size == cfg.batch_size
