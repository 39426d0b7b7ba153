"""What the player reads and types on the terminal: the status line and the console commands.

Pure formatting and parsing; the session feeds it values and acts on the parsed commands.
"""

from __future__ import annotations

from dataclasses import dataclass

HELP = "commands: say TEXT (chat to the room), peers, resync, quit"


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # say, peers, resync, quit, help, unknown
    text: str = ""


def parse_command(line: str) -> Command | None:
    """A console line as a command, None for an empty line."""
    words = line.strip().split(maxsplit=1)
    if not words:
        return None
    name, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
    if name in ("say", "chat"):
        return Command("say", rest) if rest else Command("unknown", "say what? usage: say TEXT")
    if name in ("peers", "resync", "quit", "exit", "help"):
        return Command("quit" if name == "exit" else name)
    return Command("unknown", f"unknown command {name!r}; {HELP}")


@dataclass(frozen=True, slots=True)
class PeerLine:
    name: str
    connected: bool
    rtt: float | None


@dataclass(frozen=True, slots=True)
class Status:
    game: str
    room: str
    host: str
    armed: bool
    waiting_for: tuple[str, ...]
    peers: tuple[PeerLine, ...]
    writes_out_per_s: float
    writes_in_per_s: float


def format_status(status: Status) -> str:
    state = "armed" if status.armed else "waiting for " + ", ".join(status.waiting_for or ("arming",))
    peers = ", ".join(_peer(p) for p in status.peers) or "alone"
    return (
        f"msxsync {status.game} room {status.room} | {state} | host {status.host} | "
        f"peers: {peers} | writes/s out {status.writes_out_per_s:.1f} in {status.writes_in_per_s:.1f}"
    )


def _peer(peer: PeerLine) -> str:
    if not peer.connected:
        return f"{peer.name} (connecting)"
    if peer.rtt is None:
        return peer.name
    return f"{peer.name} {peer.rtt * 1000:.0f} ms"


def safe_name(name: str, limit: int = 24) -> str:
    """A player name fit for the terminal and the emulator's screen: printable, short."""
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '{}[]$\\"')
    return cleaned[:limit] or "player"
