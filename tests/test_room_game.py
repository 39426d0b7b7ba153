"""One ROM per room (peer.core.room.room_game): who may share with whom, and what the binding does
with a peer's hello."""

from __future__ import annotations

import pytest

from peer.core.mesh.binding import Binding, RefusalReason, Refused, Role
from peer.core.room.room_game import Admit, GameGuard, Platform, Refuse, describe, judge, refusal_sentence
from peer.core.sync.codec import Proof

ROOMS = Platform(b"\x11" * 20, "C-BIOS_MSX1")
PATCHED = Platform(b"\x22" * 20, "C-BIOS_MSX1")
FORCED = Platform(b"\x22" * 20, "C-BIOS_MSX1", forced=True)
OTHER_MACHINE = Platform(b"\x11" * 20, "C-BIOS_MSX2")


def test_the_same_game_shares() -> None:
    assert judge(ROOMS, ROOMS, i_started=True, they_started=False) == Admit()
    assert (
        judge(ROOMS, Platform(ROOMS.rom, ROOMS.machine, forced=True), i_started=False, they_started=False)
        == Admit()
    )


def test_another_rom_is_refused_and_the_one_who_differs_from_the_room_is_told() -> None:
    assert judge(ROOMS, PATCHED, i_started=True, they_started=False) == Refuse(
        f"plays a different ROM ({describe(PATCHED)}; this one {describe(ROOMS)})"
    )
    verdict = judge(PATCHED, ROOMS, i_started=False, they_started=True)
    assert isinstance(verdict, Refuse) and verdict.fatal
    between_joiners = judge(PATCHED, ROOMS, i_started=False, they_started=False)
    assert isinstance(between_joiners, Refuse) and not between_joiners.fatal


def test_another_machine_counts_as_another_game() -> None:
    verdict = judge(OTHER_MACHINE, ROOMS, i_started=False, they_started=True)
    assert isinstance(verdict, Refuse) and verdict.fatal and "machine" in verdict.detail


def test_force_rom_admits_and_says_who_differs() -> None:
    assert judge(ROOMS, FORCED, i_started=True, they_started=False) == Admit(they_differ=True)
    assert judge(FORCED, ROOMS, i_started=False, they_started=True) == Admit(i_differ=True)
    assert judge(ROOMS, FORCED, i_started=False, they_started=False) == Admit(they_differ=True)
    # The room's first member forced another ROM: that ROM is the room's; a plain player differs.
    forced_first = judge(ROOMS, FORCED, i_started=False, they_started=True)
    assert isinstance(forced_first, Refuse) and forced_first.fatal


def test_the_refusal_sentence_names_the_game_and_the_hash_found() -> None:
    sentence = refusal_sentence("msxsync co-op demo", ROOMS, PATCHED)
    assert "msxsync co-op demo" in sentence and PATCHED.rom.hex() in sentence
    assert ROOMS.rom.hex() in sentence and "--force-rom" in sentence
    assert sentence.count(".") == 1 and sentence.endswith(".")


@pytest.mark.parametrize("rom, machine", [(b"short", ""), (b"x" * 20, "a" * 65), (b"x" * 20, "tab\there")])
def test_a_platform_that_cannot_be_valid_cannot_be_built(rom: bytes, machine: str) -> None:
    with pytest.raises(ValueError):
        Platform(rom, machine)


def binding() -> Binding:
    def refuse_patched(peer: bytes, platform: Platform | None) -> str | None:
        return None if platform == ROOMS else "plays a different ROM"

    return Binding(
        room="room",
        role=Role.OFFERER,
        local_key=b"A" * 32,
        peer=b"B" * 32,
        local_fingerprint="sha-256 AA",
        remote_fingerprint="sha-256 BB",
        local_nonce=b"a" * 32,
        room_key=None,
        now=0.0,
        platform_check=refuse_patched,
    )


def test_the_binding_refuses_another_game_before_its_proof() -> None:
    assert isinstance(binding().receive_nonce(b"b" * 32, ROOMS), Proof)
    refused = binding().receive_nonce(b"b" * 32, PATCHED)
    assert refused == Refused(b"B" * 32, RefusalReason.DIFFERENT_GAME, "plays a different ROM")
    assert isinstance(binding().receive_nonce(b"b" * 32, None), Refused)


# ---- GameGuard: the session's side, over many hellos -------------------------------------------

ME, FIRST, JOINER = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _name(key: bytes) -> str:
    return {ME: "me", FIRST: "alice", JOINER: "bob"}[key]


def test_the_guard_refuses_a_hello_without_a_game_and_admits_the_same_game() -> None:
    guard = GameGuard(ROOMS, "demo", ME)
    assert guard.check(JOINER, None, first_member=FIRST, name=_name) == "named no game in its hello"
    assert guard.check(FIRST, ROOMS, first_member=FIRST, name=_name) is None
    assert guard.refusal is None and guard.differences_to_tell(FIRST) == []


def test_the_guard_has_a_sentence_to_end_with_only_when_the_room_refused_our_game() -> None:
    guard = GameGuard(PATCHED, "demo", ME)
    detail = guard.check(JOINER, ROOMS, first_member=FIRST, name=_name)  # between joiners: not fatal
    assert detail is not None and guard.refusal is None
    assert guard.check(FIRST, ROOMS, first_member=FIRST, name=_name) is not None
    assert guard.refusal == refusal_sentence("demo", ROOMS, PATCHED)


def test_the_guard_tells_who_plays_another_rom_once_each_when_admitted() -> None:
    guard = GameGuard(ROOMS, "demo", ME)
    assert guard.check(JOINER, FORCED, first_member=ME, name=_name) is None
    assert guard.differences_to_tell(JOINER) == ["bob plays a different ROM"]
    assert guard.differences_to_tell(JOINER) == []  # once
    forced_me = GameGuard(FORCED, "demo", ME)
    assert forced_me.check(FIRST, ROOMS, first_member=FIRST, name=_name) is None
    assert forced_me.differences_to_tell(FIRST) == ["me (you) plays a different ROM"]
    assert forced_me.check(JOINER, ROOMS, first_member=FIRST, name=_name) is None
    assert forced_me.differences_to_tell(JOINER) == []  # already said


def test_a_first_member_claiming_a_rom_nobody_lists_does_not_end_a_real_players_session() -> None:
    """Issue 30, F6: the room's opener hello-claimed a ROM nobody has, and a real player with the
    game's only listed dump was refused and ended within 1 s. The room's word is now checked
    against the game's known dumps: the pair is refused, the player plays on."""
    guard = GameGuard(ROOMS, "demo", ME, known=frozenset({ROOMS.rom}))
    assert guard.check(FIRST, PATCHED, first_member=FIRST, name=_name) is not None  # no sharing ...
    assert guard.refusal is None  # ... and no ending
    honest = GameGuard(PATCHED, "demo", ME, known=frozenset({ROOMS.rom}))  # a wrong dump is still refused
    assert honest.check(FIRST, ROOMS, first_member=FIRST, name=_name) is not None
    assert honest.refusal == refusal_sentence("demo", ROOMS, PATCHED)
    unchecked = GameGuard(ROOMS, "demo", ME)  # nothing known: the room's word stands, as before
    unchecked.check(FIRST, PATCHED, first_member=FIRST, name=_name)
    assert unchecked.refusal is not None
