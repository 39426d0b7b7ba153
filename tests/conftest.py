"""Shared test settings: Hypothesis profiles (moderate by default, MSXSYNC_LONG=1 for long runs),
and the `openmsx` marker's skip when openMSX is not installed."""

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# Shared fixtures: the rendezvous test modules' (games, base, session), the real peers' (peers), the
# namespace switch's (switch) and the namespace internet's (net).
pytest_plugins = [
    "tests.rendezvous_support",
    "tests.peer_harness",
    "tests.switch_support",
    "tests.internet_support",
]

settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("MSXSYNC_LONG") == "1" else "default")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `openmsx` runs a real openMSX: without one on PATH it is skipped, saying so,
    rather than failing for a reason that is not its own."""
    if item.get_closest_marker("openmsx") is not None and shutil.which("openmsx") is None:
        pytest.skip("openMSX is not installed (no 'openmsx' on PATH)")
