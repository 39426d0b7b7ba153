"""Issue 29, F4: a room's name stays its players' while they are away.

Before, a stranger who knew the name took an emptied room with a password of its own 60 ms after
a blip dropped every member, and 0.5 s after a SIGTERM restart; the members' rejoins then got
`wrong_password`. Now the emptied room is reserved for its past members (`rendezvous.reservations`),
across a restart too (`rendezvous.persist`): the stranger is refused `room_reserved`, the members
come back with their password. Attackers use 127.0.0.5, honest players 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from peer.core.room.session import Print, Stop
from peer.core.room.signalling import (
    REJOIN_RETRY,
    Disconnect,
    Member,
    Phase,
    Refused,
    RejoinRefused,
    Roster,
    SignallingProtocol,
)
from peer.mesh.room import RoomConfig, RoomSession
from rendezvous.persist import FILE_NAME, load_reservations, save_reservations
from rendezvous.reservations import Reservation, ReservationLimits, Reservations
from rendezvous.rooms import Lobby, PasswordCheck, RoomError
from tests.mesh_support import LOOPBACK, REGIONS
from tests.mesh_support import Rendezvous as MeshRendezvous
from tests.mesh_support import rendezvous as mesh_rendezvous
from tests.ports import unused_port
from tests.rendezvous_support import Player, config_for, from_address, make_games, running
from tests.test_mesh_rendezvous import write_and_converge
from tests.test_rendezvous_operations import cli_server
from tests.test_session_machine import ALICE as ALICE_KEY
from tests.test_session_machine import ME, T0, machine
from tests.test_session_machine import joined as joined_room
from tests.test_signalling_protocol import drive
from tests.test_signalling_protocol import make as make_protocol

ALICE, BOB, MALLORY = "a" * 64, "b" * 64, "e" * 64
HASH = b"$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
HOLD = 300.0


# ---- the pure rules ------------------------------------------------------------------------------


def lobby_with_emptied_room(hold: float = HOLD) -> Lobby:
    """Alice and Bob had room "club" (demo, password HASH); both are gone since time 0."""
    lobby = Lobby(reservations=Reservations(ReservationLimits(hold=hold)))
    lobby.join(ALICE, "alice", "demo", "club", 4, PasswordCheck(new_hash=HASH))
    lobby.join(BOB, "bob", "demo", "club", None, PasswordCheck(HASH, True))
    lobby.disconnect(ALICE)
    lobby.disconnect(BOB)
    lobby.reservations.expire(0.0)
    return lobby


def test_a_stranger_cannot_take_an_emptied_room_and_learns_only_that_it_is_kept() -> None:
    lobby = lobby_with_emptied_room()
    with pytest.raises(RoomError) as refused:
        lobby.plan_join(MALLORY, "demo", "club", "mine")
    assert refused.value.code == "room_reserved"
    with pytest.raises(RoomError) as refused:  # nor by skipping the plan
        lobby.join(MALLORY, "mallory", "demo", "club", None, PasswordCheck(new_hash=b"$argon2id$other"))
    assert refused.value.code == "room_reserved"
    assert lobby.room("club") is None


def test_a_past_member_reopens_the_room_as_it_was_with_the_same_password_check() -> None:
    lobby = lobby_with_emptied_room()
    plan = lobby.plan_join(BOB, "demo", "club", "pw")
    assert plan.verify_against is HASH and not plan.hash_new_password
    with pytest.raises(RoomError) as refused:
        lobby.join(BOB, "bob", "demo", "club", None, PasswordCheck(HASH, False))
    assert refused.value.code == "wrong_password"
    with pytest.raises(RoomError) as refused:
        lobby.plan_join(BOB, "demo", "club", None)
    assert refused.value.code == "password_required"
    with pytest.raises(RoomError) as refused:
        lobby.plan_join(BOB, "other", "club", "pw")
    assert refused.value.code == "wrong_game"
    joined = lobby.join(BOB, "bob", "demo", "club", 8, PasswordCheck(HASH, True))[0].message
    assert joined["type"] == "joined" and joined["capacity"] == 4 and joined["password"] is True
    assert joined["past"] == [ALICE]  # Alice's writes stay valid for Bob's new peers
    assert "club" not in lobby.reservations
    lobby.join(ALICE, "alice", "demo", "club", None, PasswordCheck(HASH, True))  # and the other one


def test_bans_are_kept_through_the_reservation() -> None:
    lobby = Lobby()
    lobby.join(ALICE, "alice", "demo", "club", None)
    lobby.join(MALLORY, "mallory", "demo", "club", None)
    lobby.kick(ALICE, MALLORY)
    lobby.disconnect(ALICE)
    with pytest.raises(RoomError) as refused:
        lobby.plan_join(MALLORY, "demo", "club", None)
    assert refused.value.code == "banned"
    lobby.join(ALICE, "alice", "demo", "club", None)
    assert MALLORY in (lobby.room("club") or pytest.fail()).banned


def test_the_reservation_expires_and_the_name_is_free_again() -> None:
    lobby = lobby_with_emptied_room(hold=HOLD)
    assert lobby.reservations.expire(HOLD - 1) == 0 and "club" in lobby.reservations
    assert lobby.reservations.expire(HOLD) == 1
    lobby.join(MALLORY, "mallory", "demo", "club", None)
    assert (lobby.room("club") or pytest.fail()).password_hash is None


def test_quick_match_names_skip_reserved_ones() -> None:
    lobby = Lobby()
    lobby.join(ALICE, "alice", "demo", None, None)
    assert lobby.room("quick-1") is not None
    lobby.disconnect(ALICE)
    lobby.join(BOB, "bob", "demo", None, None)
    assert lobby.room_of(BOB) is not None and (lobby.room_of(BOB) or pytest.fail()).name != "quick-1"


def reservation(name: str, source: str = "10.0.0.1") -> Reservation:
    return Reservation(name, "demo", 4, None, False, source, (ALICE,), ())


def test_reservations_are_bounded_per_source_and_in_all() -> None:
    held = Reservations(ReservationLimits(max_total=10, per_source=3))
    for index in range(5):
        held.hold(reservation(f"flood{index}", "127.0.0.5"))
    assert held.names() == ["flood2", "flood3", "flood4"]  # one address pushes out only its own
    for index in range(20):
        held.hold(reservation(f"r{index}", f"10.0.0.{index}"))
    assert len(held) == 10 and held.names()[-1] == "r19"
    assert held.dropped == 2 + 13


@given(
    st.lists(st.tuples(st.sampled_from(["hold", "expire", "release"]), st.integers(0, 7), st.floats(0, 50)))
)
def test_expiry_keeps_exactly_the_reservations_whose_time_is_not_up(
    steps: list[tuple[str, int, float]],
) -> None:
    """Against a model that remembers when each name was held: a name is held from the first
    `expire` after it was reserved, for `hold` seconds, and not a moment less."""
    held = Reservations(ReservationLimits(hold=30.0))
    model: dict[str, float | None] = {}  # name -> until (None: not stamped yet)
    now = 0.0
    for action, number, step in steps:
        name = f"r{number}"
        if action == "hold":
            held.hold(reservation(name, f"10.0.0.{number}"))
            model[name] = None
        elif action == "release":
            held.release(name)
            model.pop(name, None)
        else:
            now += step
            held.expire(now)
            stamped = {n: now + 30.0 if u is None else u for n, u in model.items()}
            model = {n: u for n, u in stamped.items() if u > now}
            assert sorted(held.names()) == sorted(model)
            assert all((held.get(n) or pytest.fail()).until == u for n, u in model.items())


def test_a_room_nobody_was_in_is_not_reserved() -> None:
    held = Reservations()
    held.hold(Reservation("x", "demo", 4, None, False, "s", (), ()))
    assert len(held) == 0


# ---- the file ------------------------------------------------------------------------------------


def test_reservations_round_trip_through_the_file_with_time_left(tmp_path: Path) -> None:
    lobby = lobby_with_emptied_room()
    save_reservations(lobby.reservations, tmp_path, now=100.0)  # 200 s left
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    again = Reservations(ReservationLimits(hold=HOLD))
    assert load_reservations(again, tmp_path, now=5000.0) == 1
    kept = again.get("club") or pytest.fail()
    assert kept.password_hash == HASH and set(kept.past) == {ALICE, BOB} and kept.capacity == 4
    assert kept.until is not None and 5000.0 + 190 < kept.until <= 5000.0 + 200


BAD_ENTRIES = [
    {"room": "../../etc/passwd"},
    {"room": "club\n"},
    {"game": "../demo"},
    {"capacity": 10**9},
    {"capacity": True},
    {"password_hash": "plain text password"},
    {"password_hash": "$argon2id$" + "x" * 1000},
    {"past": ["not a key"]},
    {"past": [ALICE.upper()]},
    {"past": [ALICE, ALICE]},
    {"banned": "everyone"},
    {"source": "x" * 1000},
    {"quick": "yes"},
    {"remaining": float("inf")},
    {"remaining": -1},
]


@pytest.mark.parametrize("change", BAD_ENTRIES, ids=[str(c)[:40] for c in BAD_ENTRIES])
def test_a_hostile_file_is_refused_whole_with_a_log_line(
    tmp_path: Path, change: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    good = lobby_with_emptied_room().reservations.dump(0.0)
    entries = good["reservations"]
    assert isinstance(entries, list)
    bad = {**entries[0], **change}
    text = json.dumps({**good, "reservations": [entries[0], bad], "written_at": time.time()})
    (tmp_path / FILE_NAME).write_text(text.replace("Infinity", "1e999"))
    held = Reservations()
    assert load_reservations(held, tmp_path, now=0.0) == 0 and len(held) == 0  # not even the good one
    assert any("refused" in r.getMessage() and FILE_NAME in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xfe", b"[]", b'{"format": 1}', b"[" * 100_000, b'{"format": 2, "written_at": 0}']
)
def test_a_corrupt_file_is_refused_with_a_log_line(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).write_bytes(content)
    assert load_reservations(Reservations(), tmp_path, now=0.0) == 0
    assert any("refused" in r.getMessage() for r in caplog.records)


# ---- a real server over a real socket --------------------------------------------------------------


@asynccontextmanager
async def player(
    session: aiohttp.ClientSession, base: str, name: str, key: SigningKey
) -> AsyncIterator[Player]:
    async with session.ws_connect(f"{base}/ws") as ws:
        someone = Player(ws, name)
        someone.signing, someone.key = key, key.verify_key.encode().hex()
        await someone.login()
        yield someone


async def wait_rooms(session: aiohttp.ClientSession, base: str, count: int) -> None:
    async with asyncio.timeout(5):
        while True:
            async with session.get(f"{base}/healthz") as resp:
                if (await resp.json())["rooms"] == count:
                    return
            await asyncio.sleep(0.005)


async def test_after_a_blip_a_stranger_is_refused_and_the_members_rejoin(games: Path) -> None:
    alice, bob = SigningKey.generate(), SigningKey.generate()
    async with (
        running(config_for(games)) as base,
        aiohttp.ClientSession() as honest,
        from_address("127.0.0.5") as attacker,
    ):
        async with player(attacker, base, "mallory", SigningKey.generate()) as mallory:
            async with player(honest, base, "alice", alice) as a, player(honest, base, "bob", bob) as b:
                await a.join("club", password="secret")
                await a.expect("joined")
                await b.join("club", password="secret")
                await b.expect("joined")
            # The blip: both sockets are gone. The stranger asks for the name at once.
            await wait_rooms(honest, base, 0)
            await mallory.join("club", password="mine")
            answer = await mallory.next()
            assert answer["type"] == "error" and answer["code"] == "room_reserved", answer
        async with player(honest, base, "bob", bob) as b:
            await b.join("club", password="wrong")
            await b.error("wrong_password")
            await b.join("club", password="secret")
            joined = await b.expect("joined")
            assert joined["password"] is True and joined["past"] == [alice.verify_key.encode().hex()]
            async with player(honest, base, "alice", alice) as a:
                await a.join("club", password="secret")
                assert len((await a.expect("joined"))["members"]) == 2


async def test_after_a_sigterm_restart_a_stranger_is_refused_and_the_members_rejoin(tmp_path: Path) -> None:
    games, state = make_games(tmp_path / "games"), tmp_path / "state"
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    alice = SigningKey.generate()
    async with aiohttp.ClientSession() as honest, from_address("127.0.0.5") as attacker:
        async with cli_server(port, games, tmp_path / "old.log", "--state-dir", str(state)) as old:
            async with player(honest, base, "alice", alice) as a:
                await a.join("club", password="secret")
                await a.expect("joined")
                old.send_signal(signal.SIGTERM)
                await a.error("server_restarting")
            assert await asyncio.wait_for(old.wait(), 15) == 0
        assert (state / FILE_NAME).exists()
        async with cli_server(port, games, tmp_path / "new.log", "--state-dir", str(state)):
            async with player(attacker, base, "mallory", SigningKey.generate()) as mallory:
                await mallory.join("club", password="mine")
                await mallory.error("room_reserved")
            async with player(honest, base, "alice", alice) as a:
                await a.join("club", password="secret")
                assert (await a.expect("joined"))["password"] is True
    logged = (tmp_path / "new.log").read_text()
    assert "1 room names reserved for their players" in logged


async def test_a_corrupt_state_file_is_refused_and_the_server_starts_empty(tmp_path: Path) -> None:
    games, state = make_games(tmp_path / "games"), tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_text('{"format": 1, "written_at": 0, "reservations": [{"room": "../x"}]}')
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        cli_server(port, games, tmp_path / "log", "--state-dir", str(state)),
        aiohttp.ClientSession() as s,
        player(s, base, "carol", SigningKey.generate()) as carol,
    ):
        await carol.join("club")
        await carol.expect("joined")
    lines = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert any(line["message"].startswith(f"refused {state / FILE_NAME}") for line in lines)


# ---- the peer: a refused REjoin is a notice, not the end -------------------------------------------


def signalling_in_room() -> SignallingProtocol:
    """A client that joined room "r", then lost its connection, and is joining again."""
    proto, _ = make_protocol()
    drive(proto, Phase.JOINED)
    proto.connection_lost()
    drive(proto, Phase.JOINING, now=1.0)
    return proto


@pytest.mark.parametrize(
    "code", ["wrong_password", "room_reserved", "password_required", "wrong_game", "room_full"]
)
def test_a_refused_rejoin_is_a_notice_and_a_later_retry(code: str) -> None:
    proto = signalling_in_room()
    events = proto.receive_text(json.dumps({"type": "error", "code": code, "message": "no"}), 1.0)
    assert events == [RejoinRefused(code, "no"), Disconnect(f"rejoin refused: {code}", REJOIN_RETRY)]
    assert proto.phase is Phase.OFFLINE and proto.roster is not None  # not ENDED: it connects again
    drive(proto, Phase.JOINED, now=REJOIN_RETRY + 2)  # and gets back in once the server lets it


@pytest.mark.parametrize("code", ["wrong_password", "room_reserved"])
def test_a_refused_first_join_still_ends_the_client(code: str) -> None:
    proto, _ = make_protocol()
    drive(proto, Phase.JOINING)
    (event,) = proto.receive_text(json.dumps({"type": "error", "code": code, "message": "no"}), 0.0)
    assert event == Refused(code, "no") and proto.phase is Phase.ENDED


def test_a_ban_still_ends_a_rejoin() -> None:
    proto = signalling_in_room()
    (event,) = proto.receive_text('{"type":"error","code":"banned","message":"no"}', 1.0)
    assert event == Refused("banned", "no")


def test_the_session_plays_on_when_its_rejoin_is_refused_and_says_so_once() -> None:
    session = machine()
    joined_room(session, ME, ALICE_KEY)
    before = session.phase
    told = session.rejoin_refused("wrong_password")
    assert not any(isinstance(e, Stop) for e in told) and session.phase is before
    words = [e.text for e in told if isinstance(e, Print)]
    assert len(words) == 1 and "wrong_password" in words[0] and "Playing on" in words[0]
    assert not any(isinstance(e, Print) for e in session.rejoin_refused("wrong_password"))  # once
    assert session.server_lost() == []  # it was said why; no second, vaguer message
    back = session.roster(
        Roster("friday", ALICE_KEY, (Member(ME, "me", True), Member(ALICE_KEY, "a", True))), T0 + 20
    )
    assert "back in the room at its server" in [e.text for e in back if isinstance(e, Print)]
    assert session.rejoin_refusal is None


def test_our_name_taken_on_a_rejoin_is_told_once_in_its_own_words() -> None:
    """Issue 30, F8: someone took our name while we were away; the player hears that, once."""
    session = machine()
    joined_room(session, ME, ALICE_KEY)
    words = [e.text for e in session.rejoin_refused("name_taken") if isinstance(e, Print)]
    assert len(words) == 1 and "goes by our name" in words[0] and "Playing on" in words[0]
    assert not any(isinstance(e, Print) for e in session.rejoin_refused("name_taken"))


class RefusalsSeen:
    def __init__(self) -> None:
        self.codes: list[str] = []
        self.told = asyncio.Event()

    def __call__(self, code: str, message: str) -> None:
        self.codes.append(code)
        self.told.set()


async def test_real_peers_keep_their_mesh_when_a_stranger_took_their_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The room moves to a rendezvous that keeps no names (as before this fix, or a third party's)
    where a stranger has taken the room's name with its own password: the peers' rejoins are
    refused, and they play on over the mesh they have, then get back in once the name is free."""
    monkeypatch.setattr("peer.core.room.signalling.REJOIN_RETRY", 1.0)
    seen = [RefusalsSeen(), RefusalsSeen()]
    elsewhere = MeshRendezvous(make_games(tmp_path / "elsewhere"))
    elsewhere.config = replace(elsewhere.config, reservation_hold=0.0)  # keeps no names
    async with mesh_rendezvous(tmp_path) as server, asyncio.TaskGroup() as tasks:
        sessions = [
            RoomSession(
                RoomConfig(
                    rendezvous=server.url,
                    signing_key=SigningKey.generate(),
                    name=f"p{index}",
                    game="demo",
                    regions=REGIONS,
                    room="club",
                    password="sesame",
                    ice=LOOPBACK,
                ),
                on_rejoin_refused=seen[index],
            )
            for index in range(2)
        ]
        for room_session in sessions:
            tasks.create_task(room_session.run())
        meshes = [await asyncio.wait_for(s.wait_ready(), 15) for s in sessions]
        async with asyncio.timeout(15):
            for mesh in meshes:
                await mesh.wait_until(lambda mesh=mesh: len(mesh.admitted()) == 1)  # type: ignore[misc]
        await elsewhere.start()
        try:
            async with (
                from_address("127.0.0.5") as attacker,
                player(attacker, elsewhere.url, "mallory", SigningKey.generate()) as mallory,
            ):
                await mallory.join("club", password="mine")
                await mallory.expect("joined")
                for room_session in sessions:
                    await room_session.signalling.retarget(elsewhere.url)
                async with asyncio.timeout(15):
                    for each in seen:
                        await each.told.wait()
                assert {code for s in seen for code in s.codes} == {"wrong_password"}
                assert all(len(mesh.admitted()) == 1 for mesh in meshes)  # the links stay up
                await write_and_converge(meshes, random.Random(29), frames=3)
            # The stranger has gone: a later retry gets the peers back into their room.
            async with asyncio.timeout(15):
                for room_session in sessions:
                    client = room_session.signalling
                    await client.wait_until(lambda c=client: c.joined)  # type: ignore[misc]
            assert all(len(mesh.admitted()) == 1 for mesh in meshes)
        finally:
            for room_session in sessions:
                room_session.stop()
            await elsewhere.stop()


def test_a_state_file_that_is_no_regular_file_is_refused_without_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 29 round three, item 7: a FIFO in its place blocked the server's start for ever."""
    os.mkfifo(tmp_path / FILE_NAME)
    outcome: list[int] = []

    def load() -> None:
        outcome.append(load_reservations(Reservations(), tmp_path, 0.0))

    loading = threading.Thread(target=load)
    loading.start()
    loading.join(5.0)
    if loading.is_alive():  # (before: blocked in open(); a writer lets it go)
        os.close(os.open(tmp_path / FILE_NAME, os.O_WRONLY))
        loading.join()
    assert outcome == [0] and not loading.is_alive()
    assert any("cannot read" in r.getMessage() for r in caplog.records)
    os.unlink(tmp_path / FILE_NAME)
    save_reservations(lobby_with_emptied_room().reservations, tmp_path / "elsewhere", now=0.0)
    os.symlink(tmp_path / "elsewhere" / FILE_NAME, tmp_path / FILE_NAME)
    assert load_reservations(Reservations(), tmp_path, 0.0) == 0  # a link is not followed
