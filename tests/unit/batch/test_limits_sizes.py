"""SizeWatch: large requests refused while small ones pass show a token limit."""

from __future__ import annotations

from airflow_provider_qwen.batch.limits_sizes import SizeWatch


def test_random_429s_at_10_percent_never_turn_on_token_counting():
    watch = SizeWatch()
    for n in range(1000):
        watch.refused_randomly(again=n % 10 == 0)  # a tenth hit a request refused before
    assert not watch.sizing


def test_the_same_requests_refused_again_and_again_turn_it_on():
    watch = SizeWatch()
    for n in range(10):
        watch.refused_randomly(again=n % 2 == 1)
    assert watch.sizing


def test_refusals_above_the_most_admitted_give_that_as_the_limit():
    watch = SizeWatch()
    assert watch.refused(13_000) is None  # not counting yet
    watch.sizing = True
    watch.admitted(11_800)
    watch.admitted(11_950)
    assert [watch.refused(held) for held in (12_400, 11_000, 12_100)] == [None, None, None]
    assert watch.refused(12_600) == 11_950  # the third above it: the limit is what passed
