from ffnlab.results import ALL_VERDICTS, base_verdict


def test_rank_collapse_at_test_size(run_test_size):
    r = run_test_size("rank-collapse")
    assert base_verdict(r.verdict) in ALL_VERDICTS and r.criterion.direction == "<"
    rows = {(row[0], row[1]): row[2:] for row in r.tables[0].rows}
    n_layers = len(rows[("init", "full")])
    assert n_layers >= 4
    # at initialisation pure attention loses rank with depth; the full block keeps it (Dong et al.)
    assert rows[("init", "attn-only")][-1] < 0.5 * rows[("init", "full")][-1]
    assert rows[("init", "attn-only")][-1] < rows[("init", "attn-only")][0]
    # surgery "full" on the trained full model is the built-and-trained full model itself
    assert rows[("trained", "full")] == rows[("built+trained", "full")]
    assert [e.quantity for e in r.estimates][0] == r.criterion.quantity
