"""Command line of `msxsync-peer`: parses flags into a `PeerOptions`, nothing more."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from peer import identity, logs
from peer.app import run_peer
from peer.core.emulator.openmsx_versions import parse_window_position
from peer.options import PeerOptions, PlayerError
from rendezvous.protocol import is_valid_room_name

DEFAULT_RENDEZVOUS = "http://127.0.0.1:4567"

DESCRIPTION = """\
Play a single-player MSX game together. msxsync-peer starts openMSX with the game (or attaches
to yours), meets the other players through a rendezvous server, and shares the game's chosen RAM
(the inventory, in The Maze of Galious) directly with every other player over WebRTC.
"""

EPILOG = """\
examples:
  msxsync-peer --game demo --host                 host a LAN game of the bundled demo
  msxsync-peer --game demo --lan                  join a host found on this network
  msxsync-peer --game galious --rom galious.rom --rendezvous https://msx.example.org --room friday

while playing:
  in openMSX   F10 asks the other players for the room's items again (a resync)
  on the terminal you started it from, type:
    say TEXT   chat to everyone in the room       peers    who is here: path, round trip, last change
    resync     the same as F10                    quit     leave the room (Ctrl-C too)
  Found items show on screen and on the terminal ("player2 found the key"); everything else
  msxsync and its libraries say goes to the log file (--log-file).
"""


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address (e.g. 127.0.0.1 or ::1)") from None


def _window_position(text: str) -> tuple[int, int]:
    try:
        return parse_window_position(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msxsync-peer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    game = parser.add_argument_group("game and room")
    game.add_argument(
        "--game", required=True, metavar="NAME", help="game to play, e.g. demo or galious (required)"
    )
    game.add_argument(
        "--rendezvous",
        metavar="URL",
        default=os.environ.get("MSXSYNC_RENDEZVOUS", DEFAULT_RENDEZVOUS),
        help="where to meet the other players (default %(default)s; env MSXSYNC_RENDEZVOUS)",
    )
    game.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA for an https:// rendezvous, e.g. a private one (default: the system's "
        "CAs; certificates are always checked)",
    )
    game.add_argument(
        "--room", metavar="NAME", help="room to join or create (default: quick match into an open room)"
    )
    game.add_argument(
        "--password", metavar="SECRET", help="room password, keeps strangers out (default: none)"
    )
    game.add_argument(
        "--name",
        metavar="PLAYER",
        help="your name as the others see it (default: your login name and 4 hex digits of your key)",
    )
    game.add_argument(
        "--rom",
        metavar="PATH",
        help="your own copy of the game's ROM (default: download it from the rendezvous when it has one)",
    )
    game.add_argument(
        "--force-rom",
        action="store_true",
        help="accept a ROM that is not a known dump, e.g. a translation (default: refuse it)",
    )
    host = parser.add_argument_group("hosting and LAN play")
    host.add_argument(
        "--host",
        action="store_true",
        help="run the rendezvous in this process, so others join you (default: join --rendezvous)",
    )
    host.add_argument(
        "--port", type=int, default=4567, metavar="N", help="port to host on (default %(default)s)"
    )
    host.add_argument(
        "--games",
        action="append",
        default=[],
        metavar="DIR",
        help="extra games folder to host, repeatable (default: only the bundled games)",
    )
    host.add_argument(
        "--lan",
        action="store_true",
        help="find a host on the local network instead of --rendezvous (default: off)",
    )
    emu = parser.add_argument_group("emulator")
    emu.add_argument(
        "--headless",
        action="store_true",
        help="no window and no sound, for servers and tests (default: an openMSX window)",
    )
    emu.add_argument(
        "--machine", metavar="NAME", help="openMSX machine (default: the game's, else C-BIOS_MSX2+)"
    )
    emu.add_argument(
        "--window-position",
        type=_window_position,
        metavar="X,Y",
        help="where openMSX's window opens, in screen pixels, e.g. 700,40 (a screen left of the "
        "main one: --window-position=-1280,40): two players on one desktop side by side "
        "(openMSX 20 and later; 18 lets the desktop choose; default: where the window was "
        "last time)",
    )
    emu.add_argument(
        "--openmsx",
        metavar="PATH",
        default="openmsx",
        help="openMSX program, 18.0 or newer, e.g. openMSX 21 from openmsx.org (default %(default)s)",
    )
    emu.add_argument(
        "--openmsx-script",
        action="append",
        default=[],
        metavar="FILE",
        help="extra Tcl script for openMSX, repeatable (default: none)",
    )
    emu.add_argument(
        "--attach",
        nargs="?",
        const=0,
        type=int,
        metavar="PID",
        help="use your already running openMSX (the only one, or PID) instead of starting one "
        "(default: start one)",
    )
    misc = parser.add_argument_group("other")
    misc.add_argument(
        "--state-dir",
        metavar="DIR",
        help="identity key, ROM cache, room state, openMSX settings "
        "(default $XDG_DATA_HOME/msxsync or ~/.local/share/msxsync); one per player on a machine",
    )
    misc.add_argument(
        "--arm-after",
        type=float,
        metavar="SECONDS",
        help="emulated seconds after power-on before this peer may publish (default: 10 for a "
        "game without an armed-when rule, so that its boot does not clear the room's bytes; "
        "none for the others)",
    )
    misc.add_argument(
        "--quit-after",
        type=float,
        metavar="SECONDS",
        help="end the session after SECONDS, for demos (default: play until you quit)",
    )
    misc.add_argument(
        "--stun",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN server (stun:HOST:PORT), repeatable, used before the rendezvous's own; players "
        "behind home routers need one, and a rendezvous offers its own unless it was turned off "
        "(default: none of your own)",
    )
    misc.add_argument(
        "--turn",
        metavar="URL",
        help="a TURN relay (turn:HOST:PORT) for strict NATs, used before any the rendezvous names "
        "(default: none of your own)",
    )
    misc.add_argument("--turn-user", metavar="U", help="user name for --turn (default: none)")
    misc.add_argument("--turn-password", metavar="P", help="password for --turn (default: none)")
    misc.add_argument(
        "--no-rendezvous-ice",
        dest="rendezvous_ice",
        action="store_false",
        help="do not use the STUN and TURN servers the rendezvous offers, only --stun / --turn "
        "(default: use them)",
    )
    misc.add_argument(
        "--no-relay",
        dest="relay",
        action="store_false",
        help="never reach a player through the rendezvous's relay, the last resort when neither a "
        "direct path nor TURN works (default: use it when the rendezvous offers it)",
    )
    misc.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=logs.LEVELS,
        help="how much goes to the log file, any case (default %(default)s); debug also shows "
        "everything on the terminal, libraries and openMSX included",
    )
    misc.add_argument(
        "--log-file",
        metavar="PATH",
        help="where msxsync, its libraries and openMSX log (default: msxsync-peer.log in --state-dir)",
    )
    misc.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    emu.add_argument(
        "--ice-address",
        action="append",
        default=[],
        type=_ip_address,
        metavar="ADDR",
        help="offer only this local address to other peers, repeatable; 127.0.0.1 lets several "
        "peers play on one machine, which WebRTC otherwise never offers, and keeps a hosted "
        "rendezvous on this machine (default: every local address)",
    )
    return parser


def options_from(namespace: argparse.Namespace) -> PeerOptions:
    values = vars(namespace)
    values["games"] = tuple(values["games"])
    values["stun"] = tuple(values["stun"])
    values["openmsx_scripts"] = tuple(values.pop("openmsx_script"))
    values["ice_addresses"] = tuple(values.pop("ice_address"))
    values.pop("log_level")
    values.pop("log_file")
    return PeerOptions(**values)


def _version() -> str:
    try:
        return metadata.version("msxsync")
    except metadata.PackageNotFoundError:  # run from a clone without installing
        return "(not installed)"


def log_file(namespace: argparse.Namespace) -> Path:
    if namespace.log_file:
        return Path(namespace.log_file)
    state = Path(namespace.state_dir) if namespace.state_dir else identity.default_state_dir()
    return state / "msxsync-peer.log"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    if namespace.arm_after is not None and namespace.arm_after < 0:
        parser.error("--arm-after must not be negative")
    if not 0 < namespace.port < 65536:
        parser.error("--port must be between 1 and 65535")
    if namespace.room is not None and not is_valid_room_name(namespace.room):
        parser.error(
            "--room must be 1 to 32 letters, digits, spaces or _ . + - (starting with a letter or digit)"
        )
    problem = logs.configure(namespace.log_level, log_file(namespace))
    if problem:
        logging.getLogger("msxsync.peer").warning("%s; logging to the terminal only", problem)
    try:
        reason = asyncio.run(run_peer(options_from(namespace)))
    except PlayerError as exc:
        print(f"msxsync-peer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the session took over SIGINT (starting, joining)
        print("msxsync-peer: interrupted while starting.", file=sys.stderr)
        return 130
    print(f"msxsync-peer: session ended ({reason})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
