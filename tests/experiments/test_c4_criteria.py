import pytest

from ffnlab.experiments.c4_criteria import bootstrap, c4_verdict, seed_estimates
from ffnlab.experiments.verdict import estimate


@pytest.mark.parametrize("sel, gap, verdict", [
    ([0.30, 0.32, 0.31], [0.20, 0.25, 0.22], "supported"),  # FFN reads its attention, and moves the lens more
    ([0.30, 0.32, 0.31], [-0.1, 0.05, -0.02], "partly supported"),  # reads it, but the lens gap is not there
    ([0.02, -0.01, 0.01], [0.20, 0.25, 0.22], "partly supported"),  # only the lens gap
    ([0.05, 0.30, 0.20], [-0.1, 0.05, -0.02], "partly supported"),  # mean clears 0.1, interval does not
    ([0.02, -0.01, 0.01], [-0.1, 0.05, -0.02], "not supported"),  # no selectivity, no lens gap
    ([-0.4, -0.5, -0.45], [-0.3, -0.2, -0.25], "not supported"),  # the FFN prefers other inputs
])
def test_each_outcome_is_reachable_from_plausible_seeds(sel, gap, verdict):
    s, g = seed_estimates(sel, gap)
    got, reason = c4_verdict(s, g)
    assert got == verdict, reason


def test_bootstrap_interval_over_sequences():
    tight = bootstrap("x", [0.2 + 0.001 * (i % 5) for i in range(40)])
    wide = bootstrap("x", [(-1) ** i * 0.5 + 0.1 for i in range(40)])
    assert tight.ci_low > 0.1 and tight.ci_high < 0.21
    assert wide.ci_low < 0.1 < wide.ci_high and wide.mean == pytest.approx(0.1)
    assert c4_verdict(tight, estimate("gap", [0.20, 0.21, 0.22]))[0] == "supported"
    assert c4_verdict(wide, estimate("gap", [0.20, 0.21, 0.22]))[0] == "partly supported"


@pytest.mark.parametrize("items, verdict", [
    ([0.3 + 0.01 * (i % 3) for i in range(30)], "supported"),
    ([0.12 + (-1) ** i * 0.3 for i in range(30)], "partly supported"),
    ([0.0 + 0.01 * (i % 3) for i in range(30)], "not supported"),
])
def test_one_pretrained_model_reaches_each_outcome_of_each_half(items, verdict):
    from ffnlab.experiments.c4_criteria import LENS_CRITERION, PATH_CRITERION, single_verdict

    got, reason = single_verdict(PATH_CRITERION, bootstrap("s", items), len(items))
    assert got == verdict and "30 sequences, bootstrap" in reason and "seed" not in reason, reason
    shifted = [x - 0.1 for x in items]  # the lens criterion's threshold is 0, the path criterion's 0.1
    assert single_verdict(LENS_CRITERION, bootstrap("g", shifted), len(items))[0] == verdict
