from ffnlab.experiments.c1_position import measured_crossover


def test_every_position_wise_kind_is_exact_and_capacity_moe_is_not(run_test_size):
    r = run_test_size("position-wise")
    rows = {row[0]: row for row in r.tables[0].rows}
    for name, row in rows.items():
        if name == "moe (capacity 1.0)":
            assert row[2] > 1e-3 and row[3] >= 1  # output at t changed in some trial
        else:
            assert row[2] == 0.0 and row[3] == 0, name  # bit-identical in every trial
    assert r.verdict == "indicative: supported"  # one seed; its briefly trained models are exempt from the bar
    # the FFN's FLOP share falls as T grows: attention's score FLOPs grow with T, the FFN's do not
    flop_share = [row[3] for row in r.tables[1].rows]
    assert all(a > b for a, b in zip(flop_share, flop_share[1:]))
    assert all(row[4] > 0 and row[5] > 0 for row in r.tables[1].rows)


def test_measured_crossover_interpolates_between_grid_points():
    times = [(64, 1.0, 2.0), (128, 2.0, 2.0 * 2 ** -1), (256, 8.0, 1.0)]
    # log(a/f) goes from log(1/2) at 64 to log(2) at 128: the crossing is halfway in log T
    assert abs(measured_crossover(times) - 64 * 2 ** 0.5) < 1e-9
    assert measured_crossover([(64, 1.0, 2.0), (128, 1.0, 2.0)]) is None
    assert measured_crossover([(64, 3.0, 2.0)]) == 64.0
