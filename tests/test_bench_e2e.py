"""Smoke test of scripts/bench_e2e.py: its quick mode runs end to end and ends with sane JSON.

It runs the floor (two headless openMSX and a stderr relay) and two real msxsync peers (real
rendezvous, real aiortc on loopback). No timing is asserted: only that every write was measured
and the figures hang together.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(90),
]


def check_phase(phase: dict[str, Any], writes: int, receivers: int) -> None:
    assert phase["receivers"] == receivers
    assert phase["sent"] + phase["unwritten_by_sender"] == writes
    assert phase["received"] + phase["lost"] == phase["sent"] * receivers
    # On an idle loopback at 10 writes a second nothing is lost; a long stall of a loaded
    # machine can make the sender skip a value or the watcher coalesce two (one frame apart).
    assert phase["sent"] >= writes - 1
    assert phase["lost"] <= 1
    # Latencies are positive (a receive logged before its send would mean a matching bug) and
    # below two seconds (more means the byte was not relayed but arrived some other way).
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"] < 2000


def test_quick_run_prints_human_lines_then_one_json_line():
    """With this tree as its own baseline: the baseline's peers run interleaved and are compared."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_e2e.py"), "--quick", "--baseline", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("floor") and lines[1].startswith("msxsync 2p")
    assert lines[2].startswith("baseline 2p") and "vs baseline: p50" in lines[-2]
    result = json.loads(lines[-1])
    assert result["benchmark"] == "e2e" and result["writes"] == 5
    check_phase(result["floor"], 5, 1)
    check_phase(result["msxsync_2"], 5, 1)
    check_phase(result["baseline_2"], 5, 1)
    assert result["msxsync_2"]["p50_vs_baseline"] == pytest.approx(
        result["msxsync_2"]["p50_ms"] / result["baseline_2"]["p50_ms"], abs=0.01
    )
    assert "msxsync_4" not in result
    mesh = result["msxsync_2"]
    assert mesh["p50_ratio"] == pytest.approx(mesh["p50_ms"] / result["floor"]["p50_ms"], abs=0.01)
    assert isinstance(result["goal_met"], bool)


def test_refuses_bad_arguments_with_a_clear_message():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_e2e.py"), "--writes", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "--writes must be between 1 and 240" in done.stderr
    not_a_tree = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_e2e.py"), "--baseline", str(ROOT / "games")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert not_a_tree.returncode == 2 and "not an msxsync source tree" in not_a_tree.stderr
