"""Threads from the cores idle now: busy cores read from /proc/stat over a short window."""

import os

import pytest

from ffnlab import threads


@pytest.mark.parametrize("busy_ticks, expected", [(0, 0.0), (100, 1.0), (200, 2.0)])
def test_busy_cores_is_the_busy_share_of_the_window_times_the_cores(monkeypatch, busy_ticks, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    samples = iter([(1000, 500), (1200, 500 + 200 - busy_ticks)])  # 200 ticks pass, `busy_ticks` of them busy
    monkeypatch.setattr(threads, "cpu_times", lambda: next(samples))
    assert threads.busy_cores(window=0) == pytest.approx(expected)


def test_cpu_times_reads_the_aggregate_line(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 1 5 100 4 0 2 0 7 0\ncpu0 5 0 2 50 2 0 1 0 0 0\n")
    assert threads.cpu_times(str(stat)) == (10 + 1 + 5 + 100 + 4 + 0 + 2 + 0, 104)


def test_unreadable_stat_falls_back(monkeypatch):
    def fail():
        raise OSError("no /proc")
    monkeypatch.setattr(threads, "cpu_times", fail)
    assert threads.busy_cores(window=0) is None


def test_threads_are_the_idle_cores(monkeypatch):
    threads.default_threads.cache_clear()
    monkeypatch.delenv("FFNLAB_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for busy, expected in ((0.1, 2), (0.9, 1), (1.8, 1), (None, 2)):
        monkeypatch.setattr(threads, "busy_cores", lambda busy=busy: busy)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # the fallback reads an idle machine
        threads.default_threads.cache_clear()
        assert threads.default_threads() == expected
    threads.default_threads.cache_clear()
