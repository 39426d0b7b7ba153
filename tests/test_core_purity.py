"""The pure core must stay pure: importing it pulls in no event loop, network stack or processes."""

import subprocess
import sys

PURE_MODULES = [
    "games.definition",
    "peer.core",
    "peer.core.clock",
    "peer.core.state",
    "peer.core.codec",
    "peer.core.replica",
    "peer.core.arming",
    "peer.core.gating",
    "peer.core.pacing",
    "peer.core.paths",
    "peer.core.takeover",
    "peer.core.lan",
    "peer.core.openmsx_protocol",
    "peer.core.signalling",
    "peer.core.relay_session",
    "rendezvous.wire",
    "rendezvous.fairness",
    "rendezvous.rooms",
    "rendezvous.ice",
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
