import math

import pytest

from ffnlab.experiments.verdict import decide, estimate, t975
from ffnlab.results import Criterion

GT = Criterion("gap", ">", 0.1, "95% CI above 0.1")
LT = Criterion("ratio", "<", 0.5, "95% CI below 0.5")


def test_estimate_matches_hand_computed_t_interval():
    e = estimate("x", [1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # sd = 1, df = 2
    assert (e.mean, e.ci_low, e.ci_high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert t975(200) == 1.960 and t975(11) == 2.228


def test_one_seed_interval_is_the_point_and_says_so():
    e = estimate("gap", [0.3])
    assert e.ci_low == e.ci_high == 0.3
    verdict, reason = decide(GT, e)
    assert verdict == "supported" and "one seed" in reason


@pytest.mark.parametrize("values,crit,expected", [
    ([0.30, 0.32, 0.31], GT, "supported"),             # whole interval above 0.1
    ([0.05, 0.30, 0.20], GT, "partly supported"),      # mean 0.18 above, interval crosses
    ([0.01, 0.02, 0.03], GT, "not supported"),         # all below
    ([0.20, 0.25, 0.22], LT, "supported"),
    ([0.10, 0.80, 0.40], LT, "partly supported"),
    ([0.90, 0.70, 0.80], LT, "not supported"),
])
def test_each_outcome(values, crit, expected):
    assert decide(crit, estimate(crit.quantity, values))[0] == expected


def test_requirement_downgrades_and_partial_condition_lifts():
    strong = estimate("gap", [0.30, 0.32, 0.31])
    verdict, reason = decide(GT, strong, requirements=[(False, "no-FFN recall within 0.1")])
    assert verdict == "partly supported" and "no-FFN recall" in reason
    assert decide(GT, strong, requirements=[(True, "ok")])[0] == "supported"
    weak = estimate("gap", [0.01, 0.02, 0.03])
    assert decide(GT, weak, partial=(True, "pure attention collapses"))[0] == "partly supported"
    assert decide(GT, weak, partial=(False, "pure attention collapses"))[0] == "not supported"


def test_threshold_equal_is_not_clearing():
    assert decide(GT, estimate("gap", [0.1]))[0] == "not supported"
