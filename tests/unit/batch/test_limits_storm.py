"""StormWatch: random 429s, a spent rate limit, or a fallen cap, by the requests started after."""

from __future__ import annotations

import random

from airflow_provider_qwen.batch.limits_storm import Refusal, StormWatch


def test_a_run_where_everything_new_is_refused_is_suspect_then_a_storm():
    watch = StormWatch()
    watch.succeeded(9)
    suspect = [watch.refused(Refusal(ticket, "random"), ticket + 1, 1.0) for ticket in range(10, 18)]
    assert suspect == [False] * 7 + [True]  # the 8th refused of 8 started
    watch.succeeded(5)  # admitted before the storm: proves nothing
    assert watch.judge(1.01, hold=0.15) is None  # still held
    storm, run = watch.judge(1.2, hold=0.15)
    assert storm
    assert [entry.ticket for entry in run] == list(range(10, 18))
    assert watch.suspect_since is None
    assert not watch.running


def test_a_suspect_run_is_no_storm_when_later_requests_pass():
    watch = StormWatch()
    for ticket in range(8):
        watch.refused(Refusal(ticket, "random"), ticket + 1, 1.0)
    for ticket in (3, 5, 7):  # the server took requests started after the run's first
        watch.succeeded(ticket)
    storm, _ = watch.judge(1.2, hold=0.15)
    assert not storm


def test_random_429s_at_10_percent_are_almost_never_suspect():
    watch = StormWatch()
    draws = random.Random(4)
    suspect = 0
    for ticket in range(100_000):
        if draws.random() < 0.1:
            suspect += watch.refused(Refusal(ticket, "random"), ticket + 1, 0.0)
            if watch.suspect_since is not None:
                watch.judge(1.0, hold=0.0)
        else:
            watch.succeeded(ticket)
    assert suspect == 0


def test_frequent_random_429s_raise_the_share_needed():
    watch = StormWatch()
    results = [watch.refused(Refusal(t, "random"), 2 * t + 1, 0.0, random_share=0.3) for t in range(0, 20, 2)]
    assert not any(results)  # 10 of 20 refused: suspect at 10%, not when 30% are random anyway
