"""Shared test settings: Hypothesis profiles (moderate by default, MSXSYNC_LONG=1 for long runs)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("MSXSYNC_LONG") == "1" else "default")
