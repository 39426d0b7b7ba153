"""What a player reads: the status line, the `peers` table, where the room lives, the host's join
hint, and `--help` (every flag described with its default, the console commands and F10)."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peer import cli, logs
from peer.console import PeerLine, Status, format_peers, format_status, server_words
from peer.core.room.lan import join_hint
from peer.hosting import listen_address
from peer.options import PeerOptions
from peer.terminal import Terminal
from rendezvous import cli as rendezvous_cli

JARGON = re.compile(r"armed|e000|==|bytes from|writes/s", re.IGNORECASE)


def status(armed: bool = True, peers: tuple[PeerLine, ...] = ()) -> Status:
    return Status(
        game="msxsync co-op demo",
        room="quick-1",
        server="hosted by player1",
        armed=armed,
        waiting_for=() if armed else ("the room's items", "the game to start"),
        peers=peers,
    )


def test_status_line_in_a_players_words() -> None:
    bob = PeerLine("player2", True, 0.0123)
    carol = PeerLine("player3", False, None)
    line = format_status(status(peers=(bob, carol)))
    assert line == (
        "msxsync co-op demo | room quick-1 (hosted by player1) | sharing with 1 player"
        " | players: player2 12 ms, player3 (connecting)"
    )
    waiting = format_status(status(armed=False))
    assert "waiting for the room's items, the game to start" in waiting
    assert "players: nobody else yet" in waiting
    for text in (line, waiting):
        assert not JARGON.search(text), text


def test_status_on_a_pipe_changes_only_with_its_words() -> None:
    """Round trips change every second: a pipe gets a line only when the words change."""
    out = io.StringIO()
    shown = [status(peers=(PeerLine("player2", True, rtt),)) for rtt in (0.010, 0.011, 0.012)]
    shown.append(status(peers=(PeerLine("player2", True, 0.012), PeerLine("player3", True, 0.02))))
    terminal = Terminal(lambda: shown[0], lambda command: None, stream=out)
    for each in shown:
        terminal.draw(each)
    assert out.getvalue().splitlines() == [
        "msxsync co-op demo | room quick-1 (hosted by player1) | sharing with 1 player | players: player2",
        "msxsync co-op demo | room quick-1 (hosted by player1) | sharing with 2 players"
        " | players: player2, player3",
    ]


def test_peers_table() -> None:
    rows = format_peers((PeerLine("player2", True, 0.0123, 3.2), PeerLine("carol", False, None)))
    assert rows == [
        "player   path        round trip  last change",
        "carol    connecting  -           none yet",
        "player2  direct      12 ms       3 s ago",
    ]
    assert format_peers(()) == ["nobody else is in the room yet"]


@pytest.mark.parametrize(
    ("hosting", "standby", "url", "words"),
    [
        (True, None, "http://127.0.0.1:4567", "you host it"),
        (False, "http://127.0.0.1:4567", "http://127.0.0.1:4567", "hosted by alice"),
        (False, "http://10.0.0.5:4567", "http://10.0.0.5:4567/", "hosted by alice"),
        (False, "http://10.0.0.5:4568", "https://msx.example.org", "on msx.example.org"),
        (False, None, "http://10.0.0.9:4567", "on 10.0.0.9:4567"),
    ],
)
def test_alice_hosts_only_when_her_program_is_the_rendezvous(
    hosting: bool, standby: str | None, url: str, words: str
) -> None:
    assert server_words(hosting=hosting, host_name="alice", host_standby=standby, url=url) == words


def test_join_hint_brackets_ipv6_and_offers_only_usable_addresses() -> None:
    addresses = ["192.168.1.7", "fd00::2", "127.0.0.1", "fe80::1", "10.0.0.3"]
    everywhere = join_hint(addresses, 4567, "::")
    assert everywhere == (
        "others join with --lan or --rendezvous http://192.168.1.7:4567 or http://10.0.0.3:4567"
        " or http://[fd00::2]:4567"
    )
    ipv4 = join_hint(addresses, 4567, "0.0.0.0")  # answers on IPv4 only: no IPv6 address offered
    assert ipv4 == "others join with --lan or --rendezvous http://192.168.1.7:4567 or http://10.0.0.3:4567"
    assert "<this machine's address>" in join_hint(["127.0.0.1"], 4567, "0.0.0.0")
    local = join_hint(addresses, 4567, "127.0.0.1")
    assert "http://127.0.0.1:4567" in local and "192.168" not in local


def test_a_demo_on_one_machine_hosts_on_loopback_only() -> None:
    options = PeerOptions(game="demo", rendezvous="", ice_addresses=("127.0.0.1",))
    assert listen_address(options) == "127.0.0.1"
    assert listen_address(PeerOptions(game="demo", rendezvous="")) == "0.0.0.0"


def _described(parser: argparse.ArgumentParser) -> list[str]:
    """The flags whose help lacks a description or a default."""
    missing = []
    for action in parser._actions:  # (argparse has no public list)
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        if len(text) < 12 or not re.search(r"default|required", text):
            missing.append(action.option_strings[0])
    return missing


def test_peer_help_describes_every_flag_with_its_default() -> None:
    parser = cli.build_parser()
    assert _described(parser) == []
    text = parser.format_help()
    for words in ("say TEXT", "peers", "resync", "quit", "F10"):
        assert words in text


def test_rendezvous_help_describes_every_flag_and_points_at_no_repository_path() -> None:
    parser = rendezvous_cli.build_parser()
    assert _described(parser) == []
    text = parser.format_help()
    assert "rendezvous/PROTOCOL.md" not in text
    assert "--protocol" in text


def test_rendezvous_prints_its_protocol() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rendezvous.cli", "--protocol"], capture_output=True, text=True, check=True
    ).stdout
    assert "/ws" in out and "joined" in out


def test_version_and_any_case_log_level() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "peer.cli", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("msxsync-peer ")
    namespace = cli.build_parser().parse_args(["--game", "demo", "--log-level", "DEBUG"])
    assert namespace.log_level == "debug"


def test_the_terminal_hides_library_chatter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    logs.configure("info", tmp_path / "peer.log")
    try:
        logging.getLogger("aiohttp.access").info("GET /ws 101")
        logging.getLogger("aioice.ice").warning("Connection(0) state NEW -> CHECKING")
        logging.getLogger("msxsync.peer").info("joined room 'quick-1'")
        logging.getLogger("msxsync.peer").warning("cannot announce on the LAN")
        err = capsys.readouterr().err
        assert err == "msxsync: WARNING: cannot announce on the LAN\n"
        for handler in logging.getLogger().handlers:
            handler.flush()
        written = (tmp_path / "peer.log").read_text()
        assert "GET /ws 101" in written and "state NEW" in written and "joined room" in written
    finally:
        logs.configure("warning", None)
