"""StartWindow: admitted starts and their tokens over the last window, in fixed memory."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.batch.limits_window import BUCKETS, StartWindow


def test_starts_leave_the_window_after_it_and_refusals_never_count():
    window = StartWindow(60.0)
    first = window.start(0.0)
    window.start(10.0)
    refused = window.start(20.0)
    window.refused(refused)
    assert window.count(20.0) == 2
    assert window.count(60.0 + window.width) == 1  # the first left (a bucket late at most)
    assert window.count(200.0) == 0
    window.refused(first)  # a bucket that left the window: the counts stay right
    assert window.count(200.0) == 0


def test_tokens_are_reported_estimated_or_the_mean():
    window = StartWindow(60.0)
    window.answered(window.start(0.0), 100, 20)
    window.answered(window.start(0.0), 300, 60)
    assert window.mean_tokens == 200
    assert window.mean_completion_tokens == 40
    window.start(1.0)  # in flight, no estimate: counts as the mean
    window.start(1.0, estimate=500)  # in flight with one
    assert window.tokens(1.0) == 400 + 200 + 500


def test_token_spread_tells_one_size_from_many():
    same = StartWindow(60.0)
    mixed = StartWindow(60.0)
    for tokens in (100, 100, 100, 100):
        same.answered(same.start(0.0), tokens)
    for tokens in (20, 600, 200, 20):
        mixed.answered(mixed.start(0.0), tokens)
    assert same.token_spread == 0.0
    assert mixed.token_spread > 0.8


def test_free_at_is_when_enough_has_left():
    window = StartWindow(10.0)
    for second in range(10):
        window.answered(window.start(float(second)), 100)
    assert window.free_at(9.0, requests=11, tokens=None) == 9.0  # room now
    assert window.free_at(9.0, requests=10, tokens=None) == pytest.approx(10.0 + window.width)
    assert window.free_at(9.0, requests=None, tokens=1000, need=250) == pytest.approx(12.0 + window.width)


def test_memory_is_fixed_however_many_starts():
    window = StartWindow(1.0)
    for n in range(100_000):
        window.start(n * 0.0001)  # 10,000 a second for 10 s
    assert len(window._buckets) <= BUCKETS + 1
    assert window.count(10.0) == pytest.approx(10_000, rel=0.01)
