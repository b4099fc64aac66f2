"""c7-kv-memories' criterion: each outcome, each requirement and each finding, from synthetic numbers."""

import torch

from ffnlab.analysis.memory_controls import NeuronAgreement, PromotionScores
from ffnlab.experiments.kv_controls import LayerControls, judge_kv, layer_rows, thirds


def layer(i, hit, shallow, promoted=1.0, eliminated=-0.5, shuffled=0.001, n=3000, c=300):
    g = torch.Generator().manual_seed(i)
    rand = lambda m: torch.rand(m, generator=g, dtype=torch.float64)  # noqa: E731
    noise = lambda: 0.5 * torch.randn(c, generator=g, dtype=torch.float64)  # noqa: E731
    agreement = NeuronAgreement((rand(n) < hit).double(), torch.full((n,), shuffled, dtype=torch.float64),
                                torch.full((n,), 1e-4, dtype=torch.float64))
    base = 1.0 + noise()
    return LayerControls(i, agreement, (rand(n) < shallow).double(), (rand(n) < 0.2).double(),
                         PromotionScores(i, base + promoted + noise(), base + noise(), eliminated + noise(), noise()))


def model(hits=(0.002, 0.002, 0.005, 0.005, 0.01, 0.01), shallow=(0.6, 0.6, 0.45, 0.45, 0.3, 0.3), **kw):
    return [layer(i, h, s, **kw) for i, (h, s) in enumerate(zip(hits, shallow))]


def test_supported_with_every_requirement_and_active_suppression_as_finding():
    est, verdict, reason = judge_kv(model())
    assert verdict == "supported"
    assert est[0].ci_low > 2 and est[1].ci_low > 0 and est[2].ci_low > 0 and est[3].ci_low > 0
    assert est[4].ci_high < 0 and "Finding: active suppression" in reason


def test_not_supported_when_upper_agreement_is_at_the_shuffled_level():
    est, verdict, _ = judge_kv(model(hits=(0.001,) * 6))
    assert est[0].mean < 2 and verdict == "not supported"


def test_partly_when_only_the_mean_ratio_clears():
    est, verdict, reason = judge_kv(model(hits=(0.0005, 0.0005, 0.001, 0.001, 0.003, 0.003), shuffled=0.0012))
    assert est[0].mean > 2 > est[0].ci_low
    assert verdict == "partly supported" and "interval does not" in reason


def test_each_requirement_can_fail():
    _, verdict, reason = judge_kv(model(hits=(0.01,) * 6))  # agreement flat over depth
    assert verdict == "partly supported" and "but not: agreement rises" in reason
    _, verdict, reason = judge_kv(model(shallow=(0.3, 0.3, 0.45, 0.45, 0.6, 0.6)))  # shallow patterns rise
    assert verdict == "partly supported" and "but not: shallow patterns fall" in reason
    _, verdict, reason = judge_kv(model(promoted=0.0))  # promoted tokens no better than frequency-matched
    assert verdict == "partly supported" and "but not: promoted tokens" in reason


def test_the_elimination_finding_reads_the_interval():
    assert "not distinguishable" in judge_kv(model(eliminated=0.0))[2]
    assert "above frequency-matched" in judge_kv(model(eliminated=0.5))[2]


def test_layer_rows_and_thirds():
    assert thirds(30) == (range(10), range(20, 30)) and thirds(2) == (range(1), range(1, 2))
    rows = layer_rows(model(), resamples=200)
    assert [r["layer"] for r in rows] == list(range(6)) and rows[0]["neurons"] == 3000
    for r in rows:
        mean, lo, hi = r["shallow_excess"]
        assert lo <= mean <= hi
        assert abs(r["shallow_random"] - 0.2) < 0.03


def test_registered_versions_and_the_logged_deviation():
    from ffnlab.experiments.registry import get

    kv = get("c7-kv-memories")
    assert kv.version == 2 and not kv.seeded  # a pretrained model: intervals over neurons and positions
    assert [d.version for d in kv.deviations] == [2] and "0.041%" in kv.deviations[0].seen
    kn = get("c7-knowledge-neurons")
    assert kn.version == 1 and not kn.seeded and kn.claim == "C7"
