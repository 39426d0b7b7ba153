"""A plain `pip install .` carries what the programs need at run time: the bundled games and docs."""

import subprocess
import sys
import zipfile


def test_wheel_carries_games_protocol_and_commands(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("msxsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in [
        "games/demo.regions",
        "games/demo.rom",
        "games/demo.asm",
        "games/galious.regions",
        "games/README.md",
        "rendezvous/PROTOCOL.md",
        "peer/core/sync/replica.py",
        "rendezvous/app.py",
    ]:
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "msxsync-peer = peer.cli:main" in text
    assert "msxsync-rendezvous = rendezvous.cli:main" in text
