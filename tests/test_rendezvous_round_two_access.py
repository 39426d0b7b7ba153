"""Issue 29, round two of attacking a public rendezvous: who gets access to what (findings 8, 10,
11 and 13). Each runs a real server on a loopback socket, attackers on 127.0.0.5 and up, honest
players on 127.0.0.1; the figures of the issue are the before.

- F8: anyone who said hello got 12-hour TURN credentials (107 a second per address) and kept them
  after a kick. Now only members get them, a share per address, renewed while they are members.
- F10: 50 addresses guessing one room's password made honest joins `busy` 3 times in 5. Now a room
  has a guess budget (`try_later`), and its past members are never held back by it.
- F11: `--hide-private-rooms` was defeated by `GET /api/rooms/NAME` (10 hidden rooms in 1.8 s).
- F13: a hello after SIGTERM was welcomed, then closed with 1001 instead of 1012.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from nacl.signing import SigningKey

from peer.core.room.signalling import (
    BadMessage,
    Disconnect,
    IceServersChanged,
    Phase,
    RosterChanged,
    SignallingProtocol,
)
from rendezvous import ice
from rendezvous.access import Access, AccessLimits
from rendezvous.fairness import SourceLimits
from tests.ports import unused_port
from tests.rendezvous_support import (
    Player,
    config_for,
    connect,
    from_address,
    logged_in,
    make_games,
    running,
)
from tests.test_rendezvous_operations import cli_server

ATTACKER = "127.0.0.5"
TURN = "turn:turn.example.org:3478"
SECRET = b"correct horse battery staple"
RENEW = 0.3  # seconds between a member's TURN credentials, here


def turn_users(servers: list[dict[str, Any]]) -> list[str]:
    return [server["username"] for server in servers if "username" in server]


async def answer(player: Player, *kinds: str) -> dict[str, Any]:
    """The next message of one of `kinds`, or the next error."""
    while True:
        body = await player.next()
        if body["type"] in kinds or body["type"] == "error":
            return body


# ---- F8: TURN credentials --------------------------------------------------------------------


async def test_turn_credentials_go_to_members_within_a_share_and_stop_after_a_kick(games: Path) -> None:
    turn = ice.IceConfig(turn_urls=(TURN,), turn_secret=ice.TurnSecret(SECRET), turn_renew=RENEW)
    async with (
        running(config_for(games, ice=turn)) as base,
        from_address(ATTACKER) as attacker,
        aiohttp.ClientSession() as honest,
    ):
        welcomes = []
        for i in range(30):  # a harvester saying hello over and over
            async with logged_in(attacker, base, f"x{i}") as x:
                welcomes += turn_users(x.welcomed["ice_servers"])
        assert welcomes == []  # before: 30 sets of 12-hour credentials
        async with logged_in(attacker, base, "x") as x:
            handed = 0
            for _ in range(40):  # joining and leaving quick rooms: one set per join, within a share
                await x.join(None)
                handed += len(turn_users((await answer(x, "joined"))["ice_servers"]))
                await x.send(type="leave")
                await answer(x, "left")
        assert AccessLimits().turn_burst <= handed <= AccessLimits().turn_burst + 1

        async with logged_in(honest, base, "host") as host, logged_in(honest, base, "m") as member:
            await host.join("r")
            await host.expect("joined")
            await member.join("r")
            joined = await member.expect("joined")
            assert turn_users(joined["ice_servers"])[0].endswith(":" + member.key[:16])
            renewal = await member.expect("ice_servers")  # while a member, before they expire
            assert renewal["room"] == "r" and turn_users(renewal["ice_servers"])
            await host.send(type="kick", key=member.key)
            await member.expect("kicked")
            with contextlib.suppress(TimeoutError):
                while True:  # what was queued before the kick may still come; nothing after it
                    late = await member.next(within=6 * RENEW)
                    assert late["type"] != "ice_servers", late


def test_the_peer_takes_turn_from_joined_and_from_renewals() -> None:
    proto = SignallingProtocol(signing_key=SigningKey.generate(), name="a", game="demo", room="r")
    proto.connection_made(0.0)
    proto.receive_text(json.dumps({"type": "challenge", "version": 4, "nonce": "00" * 32}), 0.0)
    stun = {"urls": ["stun:h:1"]}
    proto.receive_text(json.dumps({"type": "welcome", "version": 4, "ice_servers": [stun]}), 0.0)
    assert [s.urls for s in proto.ice_servers] == [("stun:h:1",)]
    me = {"key": proto.key.hex(), "name": "a", "ready": False}
    first = {"urls": [TURN], "username": "100:a", "credential": "c1"}
    joined = {"type": "joined", "room": "r", "host": me["key"], "members": [me], "ice_servers": [stun, first]}
    events = proto.receive_text(json.dumps(joined), 0.0)
    assert [type(e) for e in events] == [IceServersChanged, RosterChanged] and proto.phase is Phase.JOINED
    assert proto.ice_servers[1].username == "100:a"
    second = {**first, "username": "900:a", "credential": "c2"}
    renewal = {"type": "ice_servers", "room": "r", "ice_servers": [second]}
    events = proto.receive_text(json.dumps(renewal), 1.0)
    assert events == [IceServersChanged(proto.ice_servers)] and proto.ice_servers[0].credential == "c2"
    other = {"type": "ice_servers", "room": "elsewhere", "ice_servers": []}
    assert isinstance(proto.receive_text(json.dumps(other), 1.0)[0], BadMessage)


# ---- F10: a room's guess budget ----------------------------------------------------------------


def test_a_rooms_budget_spares_past_members_and_says_when_to_come_back() -> None:
    access = Access(AccessLimits(guess_rate=0.5, guess_burst=2, table=2))
    assert access.guess("vault", False, 0.0) is None and access.guess("vault", False, 0.0) is None
    assert access.guess("vault", False, 0.0) == 2.0  # the next token, in seconds
    assert access.guess("vault", True, 0.0) is None  # a past member is never held back
    assert access.guess("vault", False, 2.0) is None
    for room in ("a", "b", "c"):  # the table holds 2 rooms: the least recently used goes
        access.guess(room, False, 3.0)
    assert len(access._guesses) == 2


def test_the_peer_retries_a_join_it_is_told_to_try_later() -> None:
    proto = SignallingProtocol(signing_key=SigningKey.generate(), name="a", game="demo", room="r")
    proto.connection_made(0.0)
    proto.receive_text(json.dumps({"type": "challenge", "version": 4, "nonce": "00" * 32}), 0.0)
    proto.receive_text(json.dumps({"type": "welcome", "version": 4}), 0.0)
    refusal = {"type": "error", "code": "try_later", "message": "m", "retry_after": 3.0}
    assert [type(e) for e in proto.receive_text(json.dumps(refusal), 0.0)] == [Disconnect]
    assert proto.phase is Phase.OFFLINE  # connects again after the backoff, not the end


class Guesses:
    """What the guessers were answered; `swinging` once 200 answers came."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.swinging = asyncio.Event()
        self.stop = asyncio.Event()

    def count(self, code: str) -> None:
        self.codes[code] += 1
        if self.codes.total() >= 200:
            self.swinging.set()


async def _guess(session: aiohttp.ClientSession, base: str, guesses: Guesses) -> None:
    async with connect(session, base, "guesser") as guesser:
        await guesser.login()
        n = 0
        while not guesses.stop.is_set():
            n += 1
            await guesser.join("vault", password=f"guess-{n}")
            reply = await answer(guesser, "joined")
            guesses.count(reply.get("code", reply["type"]))
            if reply.get("code") == "try_later":
                assert reply["retry_after"] > 0
            await asyncio.sleep(0.1)  # about 10 guesses a second from each address


async def test_guessing_from_many_addresses_neither_reaches_the_hasher_nor_keeps_members_out(
    games: Path,
) -> None:
    config = config_for(games, sources=SourceLimits())  # production shares per address
    # 50 addresses in 50 networks (/24s), so what holds them back is the room's budget alone
    attackers = [f"127.{10 + i}.0.5" for i in range(50)]
    guesses = Guesses()
    async with (
        running(config) as base,
        aiohttp.ClientSession() as honest,
        contextlib.AsyncExitStack() as stack,
        logged_in(honest, base, "host") as host,
        logged_in(honest, base, "member") as member,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()  # the room's budget starts with its first check
        await host.join("vault", password="right")
        await host.expect("joined")
        await member.join("vault", password="right")
        await member.expect("joined")
        await member.send(type="leave")
        await member.expect("left")
        sessions = [await stack.enter_async_context(from_address(a)) for a in attackers]
        async with asyncio.TaskGroup() as group:
            guessers = [group.create_task(_guess(s, base, guesses)) for s in sessions]
            await asyncio.wait_for(guesses.swinging.wait(), 60)  # the guessing is in full swing
            rejoins = []
            for _ in range(5):  # the member comes back (a blip, a restart) while it goes on
                await member.join("vault", password="right")
                rejoins.append((await answer(member, "joined")).get("code", "joined"))
                if rejoins[-1] == "joined":
                    await member.send(type="leave")
                    await member.expect("left")
            newcomer = await stack.enter_async_context(logged_in(honest, base, "new"))
            await newcomer.join("vault", password="right")
            first_try = await answer(newcomer, "joined")
            guesses.stop.set()
            elapsed = loop.time() - started
        assert all(g.done() for g in guessers)
    assert rejoins == ["joined"] * 5  # before: `busy` 3 times in 5
    assert first_try.get("code", "joined") in ("joined", "try_later")  # never `busy`
    budget, codes = AccessLimits(), guesses.codes
    assert codes["wrong_password"] <= budget.guess_burst + budget.guess_rate * elapsed + 2, codes
    assert codes["try_later"] > 100 and codes["busy"] == 0, codes


# ---- F11: room look-ups ------------------------------------------------------------------------


async def test_hidden_rooms_answer_as_absent_ones_and_lookups_are_rate_limited(games: Path) -> None:
    hidden = [f"secret-{i}" for i in range(10)]
    async with (
        running(config_for(games, hide_private_rooms=True)) as base,
        aiohttp.ClientSession() as honest,
        from_address(ATTACKER) as attacker,
        contextlib.AsyncExitStack() as stack,
    ):
        for name in [*hidden, "open"]:
            owner = await stack.enter_async_context(logged_in(honest, base, name))
            await owner.join(name, password=None if name == "open" else "pw")
            await owner.expect("joined")

        async def look(session: aiohttp.ClientSession, name: str) -> tuple[int, str, str | None]:
            async with session.get(f"{base}/api/rooms/{quote(name)}") as reply:
                return reply.status, await reply.text(), reply.headers.get("Retry-After")

        absent = await look(attacker, "nothing-here")
        assert absent[0] == 404
        assert [await look(attacker, name) for name in hidden] == [absent] * 10  # before: 10 found
        assert (await look(attacker, "open"))[0] == 200  # not hidden: the status page lists it too
        answers = [await look(attacker, f"guess-{i}") for i in range(80)]
        limited = [a for a in answers if a[0] == 429]
        assert limited and json.loads(limited[0][1])["error"] == "rate_limited"
        assert all(a[2] is not None and int(a[2]) >= 1 for a in limited)
        assert (await look(honest, "open"))[0] == 200  # another address is not held back


# ---- F13: a hello after SIGTERM ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def restarting_server(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    port = unused_port()
    async with cli_server(port, make_games(tmp_path / "games"), tmp_path / "server.log") as process:
        yield f"http://127.0.0.1:{port}", process


async def test_a_hello_or_join_after_sigterm_is_told_to_reconnect_with_1012(tmp_path: Path) -> None:
    async with (
        restarting_server(tmp_path) as (base, process),
        aiohttp.ClientSession() as session,
        logged_in(session, base, "inside") as inside,
        connect(session, base, "late") as late,
        connect(session, base, "later") as later,
    ):
        await inside.join("r")
        await inside.expect("joined")
        await late.challenge()  # connected before SIGTERM, says hello after it
        await later.challenge()
        process.send_signal(signal.SIGTERM)
        await inside.error("server_restarting")  # the server is restarting now
        await late.send(**late.hello())
        refused = await late.next()
        assert refused["type"] == "error" and refused["code"] == "server_restarting", refused
        assert refused["fatal"] is True  # before: welcomed
        await late.wait_closed()
        assert late.ws.close_code == 1012  # before: 1001, as for a server going away for good
        await later.wait_closed(within=15)  # never said hello: closed as a restart too
        assert later.ws.close_code == 1012
