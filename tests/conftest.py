"""Shared test settings: Hypothesis profiles (moderate by default, MSXSYNC_LONG=1 for long runs),
and the `openmsx` parameter: each test that starts openMSX runs once per openMSX build
(`tests.openmsx_builds`), skipping a build that is not installed, saying so."""

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

from tests.openmsx_builds import Build, builds

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`openmsx` is a parameter: every openMSX build (`tests.openmsx_builds`)."""
    if "openmsx" in metafunc.fixturenames:
        found = builds()
        metafunc.parametrize("openmsx", found, ids=[b.id for b in found], indirect=True, scope="session")


@pytest.fixture(scope="session")
def openmsx(request: pytest.FixtureRequest) -> Build:
    """The openMSX build this test runs on; a test whose build is missing skips, saying why."""
    build: Build = request.param
    if build.missing is not None:
        pytest.skip(build.missing)
    return build


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `openmsx` that runs Debian's openMSX itself (not the `openmsx` parameter)
    skips, saying so, where none is installed, rather than fail for a reason not its own."""
    uses_builds = "openmsx" in getattr(item, "fixturenames", ())
    if item.get_closest_marker("openmsx") and not uses_builds and shutil.which("openmsx") is None:
        pytest.skip("openMSX is not installed (no 'openmsx' on PATH)")
