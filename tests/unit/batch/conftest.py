"""The batch tests' shared setting: the client's backoff jitter drawn from a seeded generator, so a
batch on the virtual clock runs the same way every time (random jitter made about one run in ten
of the heavy random-429 tests slower than their bound)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(autouse=True)
def seeded_jitter(mocker):
    return mocker.patch("airflow_provider_qwen.client.retry.random", random.Random(7))
