"""Command line of `msxsync-rendezvous` (placeholder until the rendezvous issue lands)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msxsync-rendezvous",
        description="Serve msxsync games, rooms and WebRTC signalling so players can meet. "
        "Game traffic never passes through it: players talk to each other directly.",
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=4567, help="port (default %(default)s)")
    parser.add_argument("--games", action="append", default=[], metavar="DIR", help="games folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("msxsync-rendezvous: the server is not available in this version yet.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
