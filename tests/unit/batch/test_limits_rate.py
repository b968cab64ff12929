"""RateGate: a per-window limit learned from a storm, confirmed or forgotten by probes."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.batch.limits_rate import PROBE_FIRST_S, Observation, RateGate
from airflow_provider_qwen.batch.limits_window import StartWindow


def full_window(count: int = 100, tokens: int = 50) -> StartWindow:
    window = StartWindow(60.0)
    for _ in range(count):
        window.answered(window.start(0.0), tokens)
    return window


def test_a_storm_sets_the_limit_and_the_gate_holds_starts_until_the_window_frees():
    gate = RateGate(full_window())
    gate.storm(1.0, Observation(100, 5000))
    assert (gate.requests, gate.tokens, gate.confirmed) == (100, None, False)  # one size: requests
    wait, probe = gate.wait(1.0)
    assert (wait, probe) == (pytest.approx(PROBE_FIRST_S), False)  # only a probe, 50 ms on
    assert gate.wait(1.0 + PROBE_FIRST_S) == (0.0, True)


def test_two_refused_probes_confirm_then_probes_thin_out():
    gate = RateGate(full_window())
    gate.storm(1.0, Observation(100, 5000))
    now = 1.0
    intervals = []
    for _ in range(6):
        now += gate.wait(now)[0]
        assert gate.wait(now)[1]
        gate.probe_started()
        gate.probe_answered(now, ok=False)
        intervals.append(round(gate.wait(now)[0], 3))
    assert gate.confirmed
    assert intervals == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]  # then twice as far each time


def test_an_unconfirmed_limit_whose_probe_passes_is_forgotten():
    gate = RateGate(full_window())
    gate.storm(1.0, Observation(100, 5000))
    gate.probe_started()
    gate.probe_answered(1.05, ok=True)  # the "storm" was random 429s bunched up
    assert not gate.active
    assert gate.wait(1.05) == (0.0, False)


def test_a_confirmed_limit_climbs_with_passing_probes():
    window = full_window()
    gate = RateGate(window)
    gate.storm(1.0, Observation(100, 5000))
    gate.storm(2.0, Observation(101, 5050))  # a second storm at the same count confirms
    assert gate.confirmed
    rises = []
    for _ in range(3):
        window.start(2.0)  # the probe, admitted
        gate.probe_answered(2.0, ok=True)
        rises.append(gate.requests)
    assert rises == [101, 103, 106]  # +0, +1, +3 beyond what the window held: a few probes find it


def test_a_429_near_the_limit_lowers_it_by_one():
    gate = RateGate(full_window())
    gate.storm(1.0, Observation(100, 5000))
    assert gate.near_limit(Observation(95, 4750))
    assert not gate.near_limit(Observation(50, 2500))
    gate.leaked(Observation(95, 4750))
    assert gate.requests == 99


def test_with_sizes_that_vary_tokens_come_first_and_a_second_storm_tells_which():
    window = StartWindow(60.0)
    for tokens in (20, 600, 200, 20, 600, 200):
        window.answered(window.start(0.0), tokens)
    gate = RateGate(window)
    gate.storm(1.0, Observation(40, 12_000))
    assert (gate.requests, gate.tokens) == (None, 12_000)
    assert gate.counts_tokens
    gate.storm(2.0, Observation(60, 12_100))  # the token count was the same both times
    assert (gate.requests, gate.tokens) == (None, 12_100)
    gate.storm(3.0, Observation(60, 9_000))  # now the request count was
    assert (gate.requests, gate.tokens) == (60, None)


def test_learn_tokens_keeps_the_token_limit_alone():
    gate = RateGate(full_window())
    gate.learn_tokens(1.0, 8000)
    assert (gate.requests, gate.tokens, gate.confirmed) == (None, 8000, False)
