import math

import pytest

from ffnlab.analysis.timing import crossover, interleaved, loglog_slope, quadratic_share
from ffnlab.experiments.c1_position import DETECTION, c1_verdict, growth, Timing
from ffnlab.experiments.registry import get
from ffnlab.experiments.verdict import estimate


def test_every_position_wise_kind_is_exact_and_capacity_moe_is_caught(run_test_size):
    r = run_test_size("position-wise")
    rows = {row[0]: row for row in r.tables[0].rows}
    for name, row in rows.items():
        if name == "moe (capacity 1.0)":
            assert row[2] > 1e-3 and row[4] >= DETECTION * row[5]  # caught in most trials with copies of t
        elif name == "moe":  # experts' matmuls see other row counts: the last bit may round differently
            assert row[2] < 1e-6, name
        else:
            assert row[2] == 0.0 and row[3] == row[4] == 0, name  # bit-identical in every trial
    assert "dropped" in r.tables[0].note
    # the FFN's FLOP share falls as T grows: attention's score FLOPs grow with T, the FFN's do not
    flop_share = [row[3] for row in r.tables[1].rows]
    assert all(a > b for a, b in zip(flop_share, flop_share[1:]))
    assert all(row[4] > 0 and row[5] > 0 for row in r.tables[1].rows)
    assert [row[0] for row in r.tables[2].rows] == [1, 2, 4] and all(row[2] > 0 for row in r.tables[2].rows)
    assert r.config["threads"] >= 1 and r.config["precision"] == "fp32"
    assert len(r.estimates[0].per_seed) == 3  # one slope per timing repeat
    assert "by construction" in r.method and r.verdict.startswith("indicative: ")
    assert r.deviations and r.version == 3
    position, flops = r.extra["statements"]
    assert position["level"] == flops["level"] == "settled" and "by construction" in position["text"]
    assert f"at T = {r.tables[1].note.split('predicted from FLOPs ')[1].split(',')[0]}" in flops["text"]


def test_methods_text_follows_the_timing_plan(run_test_size, monkeypatch):
    from ffnlab.experiments import c1_position

    plan = Timing(32, 2, (16, 32, 64), (1, 2), 16, 2, 1)
    monkeypatch.setitem(c1_position.TIMING, "test", plan)
    monkeypatch.setitem(c1_position.EXACTNESS, "test", 1)
    r = run_test_size("position-wise")
    assert "d=32, 2 heads" in r.method and "T in [16, 32, 64]" in r.method and "2 interleaved repeats" in r.method
    assert "over T in [32, 64]" in r.method and len(r.estimates[0].per_seed) == 2


def _slopes(values):
    return estimate("s", values)


@pytest.mark.parametrize("ffn, gap, exact, caught, expected", [
    ([0.95, 1.0, 0.98], [0.6, 0.5, 0.7], [0.0], 18, "supported"),
    ([0.95, 1.0, 0.98], [0.1, 0.05, 0.1], [0.0], 18, "partly supported"),  # attention grows no faster
    ([0.95, 1.0, 0.98], [0.6, 0.5, 0.7], [0.0], 10, "partly supported"),  # the exactness test lacks power
    ([0.95, 1.0, 0.98], [0.6, 0.5, 0.7], [0.3], 18, "partly supported"),  # a position-wise kind changed: a bug
    ([0.9, 1.3, 1.1], [0.6, 0.5, 0.7], [0.0], 18, "partly supported"),  # mean below 1.15, interval not
    ([1.3, 1.4, 1.35], [0.3, 0.4, 0.3], [0.0], 18, "not supported"),  # FFN cost per token grows with T
])
def test_every_outcome_is_reachable(ffn, gap, exact, caught, expected):
    verdict, reason = c1_verdict(_slopes(ffn), _slopes(gap), _slopes(exact), caught, 20)
    assert verdict == expected and "3 timing repeats" in reason


def test_growth_fits_recover_known_exponents():
    plan = Timing(8, 1, (64, 128, 256, 512, 1024), (1,), 8, 2, 1)
    times = {(1, t): {"attention": [1e-6 * t + 1e-9 * t * t] * 2, "ffn": [2e-6 * t] * 2} for t in plan.lengths}
    g = growth(plan, times)
    assert abs(g["ffn slope"][0] - 1.0) < 1e-9 and 1.3 < g["attention slope"][0] < 2.0
    assert abs(g["ffn quadratic share"][0]) < 1e-9
    assert abs(g["attention quadratic share"][0] - 1024 ** 2 / (1e3 * 1024 + 1024 ** 2)) < 1e-6  # c T^2 / fit
    # attention (1 + 1e-3 t) us/token overtakes the FFN's 2 us/token at t = 1000
    assert abs(g["crossover"][0] - 1000) < 60 and g["slope gap"][0] > 0.3
    assert abs(loglog_slope([1, 2, 4], [3, 12, 48]) - 2) < 1e-12 and abs(quadratic_share([1, 2, 3], [1, 2, 3])) < 1e-9


def test_interleaved_rotates_the_order_and_warms_up():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    out = interleaved(calls, reps=3, inner=1, device=__import__("torch").device("cpu"))
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 and min(v) >= 0 for v in out.values())


def test_measured_crossover_interpolates_between_grid_points():
    times = [(64, 1.0, 2.0), (128, 2.0, 2.0 * 2 ** -1), (256, 8.0, 1.0)]
    # log(a/f) goes from log(1/2) at 64 to log(2) at 128: the crossing is halfway in log T
    assert abs(crossover(times) - 64 * 2 ** 0.5) < 1e-9
    assert crossover([(64, 1.0, 2.0), (128, 1.0, 2.0)]) is None
    assert crossover([(64, 3.0, 2.0)]) == 64.0
    assert math.isfinite(crossover(times))


def test_registered_version():
    assert get("position-wise").version == 3
