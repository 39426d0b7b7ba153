"""Both commands answer --help with real usage text."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "words"),
    [
        ("peer.cli", ["--game", "--rendezvous", "--headless", "--state-dir", "--arm-after"]),
        ("rendezvous.cli", ["--port", "--games"]),
    ],
)
def test_help_explains_the_flags(module, words):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for word in words:
        assert word in result.stdout


def test_peer_without_a_game_says_what_is_missing():
    result = subprocess.run([sys.executable, "-m", "peer.cli"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--game" in result.stderr


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--room", "../x"], "--room must be"),
        (["--ice-address", "localhost; rm -rf"], "is not an IP address"),
        (["--ice-address", "300.1.1.1"], "is not an IP address"),
    ],
)
def test_bad_flags_are_refused_before_anything_starts(flags, said):
    result = subprocess.run(
        [sys.executable, "-m", "peer.cli", "--game", "demo", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert said in result.stderr and "Traceback" not in result.stderr
