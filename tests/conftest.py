"""Shared test configuration."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Progress lines in logs (stderr not a terminal) would land in CliRunner's mixed output
# on a slow machine; the tests of those lines set the delay themselves.
os.environ.setdefault("SPIKECODE_PROGRESS_DELAY", "inf")
# samna on PyPI is an installer stub that runs pip against another index when imported
# (sinabs 2.x requires it, so an environment may hold it although the extras no longer
# install it; rockpool imports it to probe for hardware). Nothing may download at run
# time: block the import so both libraries see "no samna".
sys.modules["samna"] = None

settings.register_profile(
    "spikecode",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("spikecode")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
