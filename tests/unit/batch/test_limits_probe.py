"""CapProber: the probes above the cap, and what their answers mean."""

from __future__ import annotations

from airflow_provider_qwen.batch.limits_probe import DROP, WARNED_EVERY_S, CapProber


def test_a_new_cap_is_probed_at_once_and_dropped_if_the_probe_passes():
    prober = CapProber()
    prober.track(1.0, 28)
    assert prober.due(1.0)
    assert not prober.confirmed
    prober.started(29)
    prober.observe(28)  # 28 surely admitted beside it
    assert prober.answered(1.1, ok=True) == DROP


def test_429s_above_most_of_the_burst_confirm_a_cap_at_once():
    prober = CapProber()
    prober.track(0.0, 16)
    for _ in range(24):  # half of the 48 places between 16 and 64
        prober.other_refused(16, 64)
    assert prober.confirmed


def test_two_refused_probes_confirm_and_then_they_thin_out():
    prober = CapProber()
    prober.latency = 0.1
    prober.track(0.0, 16)
    now, gaps = 0.0, []
    for _ in range(5):
        prober.started(17)
        prober.answered(now, ok=False)
        gaps.append(round(prober._next - now, 3))  # type: ignore[operator]
        now = prober._next  # type: ignore[assignment]
    assert prober.confirmed
    assert gaps == [0.2, 0.4, 0.8, 1.6, 3.2]


def test_a_probe_that_slipped_into_a_freed_place_proves_nothing():
    prober = CapProber()
    prober.track(0.0, 16)
    prober.confirmed = True
    prober.started(17)
    prober.observe(12)  # never the cap's worth surely admitted beside it
    assert prober.answered(0.2, ok=True) == 0
    prober.started(17)
    prober.observe(17)
    prober.other_refused(16, 64)  # and another request met the cap meanwhile: it took its place
    assert prober.answered(0.4, ok=True) == 0


def test_passes_in_a_row_raise_the_cap_ever_faster():
    prober = CapProber()
    prober.track(0.0, 16)
    prober.confirmed = True
    rises = []
    for n in range(8):
        prober.started(17)
        prober.observe(17)
        rises.append(prober.answered(float(n), ok=True))
    assert rises == [0, 1, 0, 2, 0, 4, 0, 8]


def test_a_retry_after_on_the_caps_429s_confirms_it_and_probes_wait_a_minute():
    prober = CapProber()
    prober.track(0.0, 16)
    prober.warn(0.0)
    assert prober.confirmed
    assert not prober.due(59.0)
    assert prober.due(WARNED_EVERY_S)
