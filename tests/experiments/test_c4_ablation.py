from ffnlab.model.hooks import ABLATIONS
from ffnlab.results import ALL_VERDICTS, base_verdict


def test_ablation_lens_and_attention_shift_at_test_size(run_test_size):
    r = run_test_size("ffn-ablation")
    assert base_verdict(r.verdict) in ALL_VERDICTS
    rows = r.tables[0].rows
    assert len(rows) == 2  # one per layer
    # the lens after the last FFN reads exactly the final prediction
    kl_after_last, top1_after_last = rows[-1][2 + len(ABLATIONS)], rows[-1][4 + len(ABLATIONS)]
    assert abs(kl_after_last) < 1e-5 and top1_after_last == 1.0
    assert rows[-1][-1] is None and 0 <= rows[0][-1] <= 1  # no layer after the last
    assert r.estimates[0].mean == min(row[2] for row in rows)  # mean ablation column, one seed
