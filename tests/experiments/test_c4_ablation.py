import pytest

from ffnlab.experiments.c4_ablation import MEASURE, C4Config
from ffnlab.model import ModelConfig
from ffnlab.results import ALL_VERDICTS, base_verdict


def test_paths_lenses_and_controls_at_test_size(run_test_size):
    r = run_test_size("ffn-ablation")
    assert base_verdict(r.verdict) in ALL_VERDICTS and r.version == 3
    assert [d.version for d in r.deviations] == [3]  # the criterion changed after v2's results were seen
    path, lens, abl = (t.rows for t in r.tables)
    assert len(path) == len(lens) == len(abl) == 2  # one row per layer
    assert path[0][0] == "0 (first)" and path[0][1] == "hook_embed"  # layer 0's control is the embedding
    (first,) = r.extra["statements"]  # the layered answer: layer 0 apart, with its own number
    assert first["level"] == "suggested" and f"costs {r.estimates[8].mean:.3g} nats" in first["text"]
    # the criterion's number is the table's selectivity over layers >= 1 (one seed: same mean either way)
    assert r.estimates[0].mean == pytest.approx(sum(row[6] for row in path[1:]) / len(path[1:]), abs=1e-9)
    assert all(-1 <= row[6] <= 1 and row[2] > 0 for row in path)
    # the lens after the last FFN reads exactly the final prediction; the tuned lens stays there
    assert lens[-1][3] == pytest.approx(0.0, abs=1e-5) and lens[-1][6] < 1e-3
    assert lens[-1][-1] is None and 0 <= lens[0][-1] <= 1  # no layer after the last
    assert all(len(row) == 11 for row in abl)  # FFN and attention, five ablations each


def test_methods_text_follows_the_config():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4)
    a = MEASURE["quick"].method(cfg, 800, 128)
    b = C4Config(16, 250, 32).method(cfg, 800, 128)
    assert a != b and "32 held-out test sequences" in a and "trained 250 steps of 32" in b and "trained 60 steps of 8" in a
    assert "3-layer decoders (d=32)" in a
