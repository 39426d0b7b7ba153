"""What the player reads and types on the terminal: the status line, the `peers` table and the
console commands.

Pure formatting and parsing, in a player's words (no addresses, no rule syntax, no byte counts);
the session feeds it values and acts on the parsed commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from unicodedata import east_asian_width
from urllib.parse import urlsplit

from rendezvous.names import MAX_SHOWN, blank, isolated, printable, shown

HELP = "commands: say TEXT (chat to the room), peers (who is here), resync (F10 in openMSX too), quit"


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
    last_change: float | None = None
    """Seconds since this player's last change reached us (None: none yet)."""
    path: str | None = None
    """How the link goes ("direct", "via TURN"), once known."""


@dataclass(frozen=True, slots=True)
class Status:
    game: str
    room: str
    server: str  # `server_words`
    armed: bool
    waiting_for: tuple[str, ...]
    peers: tuple[PeerLine, ...]


def server_words(*, hosting: bool, host_name: str | None, host_standby: str | None, url: str) -> str:
    """Where the room lives, for the player: "you host it", "hosted by alice" only when alice's
    program is the rendezvous (it serves at the URL we joined), else the server's address."""
    if hosting:
        return "you host it"
    if host_name is not None and host_standby is not None and _same_server(host_standby, url):
        return f"hosted by {host_name}"
    return f"on {urlsplit(url).netloc or url}"


def _same_server(first: str, second: str) -> bool:
    a, b = urlsplit(first), urlsplit(second)
    return (a.hostname, a.port or 80) == (b.hostname, b.port or 80)


def format_status(status: Status, *, live: bool = True) -> str:
    """The one status line. LIVE adds round trips (they change every second: a terminal redraws
    them in place; a pipe gets the line only when its words change)."""
    connected = [p for p in status.peers if p.connected]
    if status.armed:
        state = f"sharing with {_count(len(connected))}" if connected else "sharing (nobody else here yet)"
    else:
        state = "waiting for " + ", ".join(status.waiting_for) if status.waiting_for else "about to share"
    players = ", ".join(_peer(p, live) for p in status.peers) or "nobody else yet"
    return f"{status.game} | room {status.room} ({status.server}) | {state} | players: {players}"


def _count(players: int) -> str:
    return "1 player" if players == 1 else f"{players} players"


def _peer(peer: PeerLine, live: bool) -> str:
    if not peer.connected:
        return f"{peer.name} (connecting)"
    words = [peer.name]
    if peer.path is not None and peer.path != "direct":
        words.append(peer.path)  # (direct is the normal case: only a relay is worth the space)
    if peer.rtt is not None and live:
        words.append(f"{peer.rtt * 1000:.0f} ms")
    return " ".join(words)


def format_peers(peers: tuple[PeerLine, ...]) -> list[str]:
    """The `peers` command's table: name, path, round trip, last change."""
    if not peers:
        return ["nobody else is in the room yet"]
    rows = [("player", "path", "round trip", "last change")]
    for peer in sorted(peers, key=lambda p: p.name.lower()):
        rows.append(
            (
                peer.name,
                (peer.path or "direct") if peer.connected else "connecting",
                f"{peer.rtt * 1000:.0f} ms" if peer.rtt is not None and peer.connected else "-",
                _ago(peer.last_change),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "none yet"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds // 3600:.0f} h ago"


def safe_text(text: str, limit: int = 200) -> str:
    """Text from the network fit for the terminal and the emulator's screen: printable and visible
    (no escape sequences, bidi controls or zero-width characters; `rendezvous.names.printable`),
    runs of spaces collapsed (spaces cannot push words to where a row starts: `rows`), short.
    Nothing of it reaches Tcl as text (`message_command` sends it hex-encoded)."""
    return " ".join(printable(text).split())[:limit]


def chat_line(name: str, who: str, text: str) -> str:
    """How chat reads, never like the program's own lines: the sender's name, its key's fingerprint
    (or "you"), "says:", then the text. Program lines never say "says:", and a shown name holds
    nothing that reads as a colon (`rendezvous.names.shown`), so a line's first colon tells chat from
    msxsync; on a terminal, a line wider than it goes on in indented rows (`rows`)."""
    return f"{isolated(shown(name))} ({who}) says: {safe_text(text)}"


def player_name(name: str | None, login: str | None, key: bytes) -> str:
    """The name the player goes by: --name as shown (`rendezvous.names.shown`); without one, the
    login name (or "player") and the first 4 hex digits of the player's key, so that players who
    named nobody (every Windows player was "player"; every Steam Deck is "deck") do not collide in
    a room: the key is kept in the state folder, so the name stays the same from run to run. A
    --name of which nothing can be shown ("{}") is treated as none."""
    if name and not blank(name):
        return shown(name)
    return f"{shown(login or 'player')[: MAX_SHOWN - 5]}-{key.hex()[:4]}"


INDENT = "    "  # how the second and later rows of a wrapped line start


def rows(line: str, columns: int) -> list[str]:
    """LINE as the rows of a terminal COLUMNS wide, each row after the first indented: no text from
    the network starts a row (where the program's own lines start), whatever filler comes before
    it. Widths are counted as a terminal counts them, or wider (`_width`), never narrower."""
    if _width(line) <= columns:
        return [line]
    out, row = [], ""
    for word in line.split():
        joined = f"{row} {word}" if row.strip() else row + word
        if _width(joined) <= columns:
            row = joined
            continue
        if row.strip():
            out.append(row)
            row = INDENT
        for ch in word:  # a word wider than a row is cut where the row ends
            if _width(row + ch) > columns and row.strip():
                out.append(row)
                row = INDENT
            row += ch
    return [*out, row] if row.strip() else out


def _width(text: str) -> int:
    """Columns TEXT takes: two for wide and fullwidth characters, one for the rest (combining marks
    too, which take none: counting them wider only ends a row early)."""
    return sum(2 if east_asian_width(ch) in "WF" else 1 for ch in text)
