"""The systemd unit under contrib/ passes `systemd-analyze verify` (where systemd is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "msxsync-rendezvous.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert "DynamicUser=yes" in text and "Restart=on-failure" in text and "KillSignal=SIGTERM" in text
    # The program is not installed here: check the unit with a stand-in that exists.
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/usr/local/bin/msxsync-rendezvous", shutil.which("true") or "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "msxsync-rendezvous.service" not in result.stderr, result.stderr
