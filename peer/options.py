"""What a player asked for (`PeerOptions`, from the command line) and the error they can fix."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


class PlayerError(Exception):
    """Something the player can fix: one sentence saying what to do. Exit code 1."""


@dataclass(frozen=True, slots=True)
class PeerOptions:
    game: str
    rendezvous: str
    room: str | None = None
    password: str | None = None
    name: str | None = None
    rom: str | None = None
    force_rom: bool = False
    host: bool = False
    lan: bool = False
    port: int = 4567
    games: tuple[str, ...] = ()
    headless: bool = False
    machine: str | None = None
    window_position: tuple[int, int] | None = None  # where openMSX's window opens (20 and later)
    openmsx: str = "openmsx"
    openmsx_scripts: tuple[str, ...] = ()
    attach: int | None = None
    state_dir: str | None = None
    arm_after: float | None = None
    stun: tuple[str, ...] = ()
    turn: str | None = None
    turn_user: str | None = None
    turn_password: str | None = None
    ice_addresses: tuple[str, ...] = ()
    rendezvous_ice: bool = True  # use the STUN/TURN servers the rendezvous names (welcome, joined)
    relay: bool = True  # reach a player through the rendezvous's relay when nothing else works
    quit_after: float | None = None  # for demos and benchmarks: end the session after this long
    ca_file: str | None = None  # trust this CA for an https:// rendezvous (a private one)

    def tls(self) -> ssl.SSLContext | None:
        """What verifies an https:// rendezvous: the system's CAs (None: aiohttp's default, which
        verifies), or only `ca_file`'s. Never no verification."""
        if self.ca_file is None:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PlayerError(f"cannot read the CA file {self.ca_file}: {exc}") from None
