"""What a player asked for (`PeerOptions`, from the command line) and the error they can fix."""

from __future__ import annotations

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
    rendezvous_ice: bool = True  # use the STUN/TURN servers the rendezvous names in its welcome
    quit_after: float | None = None  # for demos and benchmarks: end the session after this long
