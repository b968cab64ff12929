"""CapFit: the concurrency cap as the threshold that best separates recent successes from 429s."""

from __future__ import annotations

import random

from airflow_provider_qwen.batch.limits_cap import CapFit


def burst(fit: CapFit, sent: int, cap: int) -> None:
    """``sent`` requests at once: levels 1..sent, the first ``cap`` admitted."""
    for level in range(1, sent + 1):
        fit.add(level, level <= cap, level if level <= cap else 0)


def test_no_429_no_cap():
    fit = CapFit(64, keep=128)
    for level in range(1, 65):
        fit.add(level, True, level)
    assert fit.cap is None


def test_a_burst_above_the_cap_finds_it():
    fit = CapFit(64, keep=128)
    burst(fit, 64, 16)
    assert fit.cap == 16


def test_429s_alone_put_the_cap_below_the_lowest():
    fit = CapFit(64, keep=128)
    for level in (40, 17, 30):
        fit.add(level, False)
    assert fit.cap == 16


def test_random_429s_at_the_running_level_do_not_move_the_cap():
    fit = CapFit(64, keep=128)
    burst(fit, 64, 16)
    draws = random.Random(2)
    for _ in range(1000):  # running at the cap, 10% refused at random
        fit.add(16, draws.random() >= 0.1, 16)
    assert fit.cap == 16


def fallen(fit: CapFit) -> None:
    burst(fit, 64, 16)
    for _ in range(8):  # the cap fell to 8: the 9th to 16th in flight refused
        for level in range(1, 17):
            fit.add(level, level <= 8, level if level <= 8 else 0)


def test_a_lower_cap_is_taken_at_once():
    fit = CapFit(64, keep=128)
    fallen(fit)
    assert fit.cap == 8
    fit.raise_to(10)  # a probe passed above it
    assert fit.cap == 10


def test_a_higher_cap_only_as_far_as_successes_prove():
    fit = CapFit(64, keep=256)
    fallen(fit)
    for _ in range(20):  # sent at 12, passed: but only 8 surely held at once (others refused on the way)
        fit.add(12, True, 8)
    assert fit.cap == 8
    for _ in range(20):
        fit.add(12, True, 12)  # now 12 were
    assert fit.cap == 12


def test_the_cap_outlives_its_429s():
    fit = CapFit(64, keep=64)
    burst(fit, 64, 16)
    for _ in range(200):  # the 429s left the samples long ago
        fit.add(16, True, 16)
    assert fit.refused_samples == 0
    assert fit.cap == 16


def test_explains_a_429_above_the_cap_only():
    fit = CapFit(64, keep=128)
    burst(fit, 64, 16)
    assert fit.explains(17)
    assert not fit.explains(12)
    assert not CapFit(8, keep=16).explains(1)  # no cap is 0
    assert fit.cap == 16  # asking changes nothing


def test_raising_to_the_max_is_no_cap():
    fit = CapFit(16, keep=64)
    burst(fit, 16, 8)
    fit.raise_to(16)
    assert fit.cap is None
