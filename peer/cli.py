"""Command line of `msxsync-peer`: parses flags into a `PeerOptions`, nothing more."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from peer.app import run_peer
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
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msxsync-peer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    game = parser.add_argument_group("game and room")
    game.add_argument("--game", required=True, metavar="NAME", help="game to play, e.g. demo or galious")
    game.add_argument(
        "--rendezvous",
        metavar="URL",
        default=os.environ.get("MSXSYNC_RENDEZVOUS", DEFAULT_RENDEZVOUS),
        help="where to meet the other players (default %(default)s; env MSXSYNC_RENDEZVOUS)",
    )
    game.add_argument(
        "--ca-file",
        metavar="PEM",
        help="trust this CA for an https:// rendezvous (a private CA); certificates are always checked",
    )
    game.add_argument("--room", metavar="NAME", help="room to join (default: quick match)")
    game.add_argument("--password", metavar="SECRET", help="room password (keeps strangers out)")
    game.add_argument("--name", metavar="PLAYER", help="your name as others see it")
    game.add_argument("--rom", metavar="PATH", help="your own copy of the game's ROM")
    game.add_argument(
        "--force-rom", action="store_true", help="accept a ROM that is not a known dump (patches)"
    )
    host = parser.add_argument_group("hosting and LAN play")
    host.add_argument("--host", action="store_true", help="also run the rendezvous in this process")
    host.add_argument("--port", type=int, default=4567, metavar="N", help="port to host on (default 4567)")
    host.add_argument(
        "--games", action="append", default=[], metavar="DIR", help="extra games folder to host"
    )
    host.add_argument("--lan", action="store_true", help="find a host on the local network")
    emu = parser.add_argument_group("emulator")
    emu.add_argument("--headless", action="store_true", help="no window and no sound (servers, tests)")
    emu.add_argument("--machine", metavar="NAME", help="openMSX machine (default: the game's)")
    emu.add_argument("--openmsx", metavar="PATH", default="openmsx", help="openMSX binary")
    emu.add_argument(
        "--openmsx-script",
        action="append",
        default=[],
        metavar="FILE",
        help="extra Tcl script for openMSX (repeatable)",
    )
    emu.add_argument(
        "--attach",
        nargs="?",
        const=0,
        type=int,
        metavar="PID",
        help="use your already running openMSX instead of starting one",
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
        "--quit-after", type=float, metavar="SECONDS", help="end the session after SECONDS (demos)"
    )
    misc.add_argument("--stun", action="append", default=[], metavar="URL", help="STUN server")
    misc.add_argument("--turn", metavar="URL", help="TURN relay for strict NATs")
    misc.add_argument("--turn-user", metavar="U")
    misc.add_argument("--turn-password", metavar="P")
    misc.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default %(default)s)",
    )
    emu.add_argument(
        "--ice-address",
        action="append",
        default=[],
        metavar="ADDR",
        help="offer only this local address to other peers (repeatable); 127.0.0.1 lets several "
        "peers play on one machine, which WebRTC otherwise never offers",
    )
    return parser


def options_from(namespace: argparse.Namespace) -> PeerOptions:
    values = vars(namespace)
    values["games"] = tuple(values["games"])
    values["stun"] = tuple(values["stun"])
    values["openmsx_scripts"] = tuple(values.pop("openmsx_script"))
    values["ice_addresses"] = tuple(values.pop("ice_address"))
    values.pop("log_level")
    return PeerOptions(**values)


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
    logging.basicConfig(
        level=namespace.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
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
