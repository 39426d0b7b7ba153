"""The pure core must stay pure: importing it pulls in no event loop, network stack or processes."""

import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "peer" / "core"
PURE_MODULES = [
    "games.definition",
    "peer.core",
    *sorted(
        ".".join(("peer", "core", *path.relative_to(CORE).with_suffix("").parts))
        for path in CORE.rglob("*.py")
        if path.stem != "__init__"
    ),
    "peer.console",
    "rendezvous.wire",
    "rendezvous.fairness",
    "rendezvous.rooms",
    "rendezvous.reservations",
    "rendezvous.access",
    "rendezvous.rosters",
    "rendezvous.names",
    "rendezvous.ice",
    "rendezvous.protocol",
    "rendezvous.relay",
]
FORBIDDEN = ["asyncio", "aiortc", "aiohttp", "subprocess", "socket", "aioice"]


def test_pure_core_imports_no_io_modules():
    program = (
        "import importlib, sys\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd="."
    )
    assert result.stdout.strip() == "[]"
