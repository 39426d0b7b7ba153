"""Issue 29, round three: what an outside attacker still got from a landed server on loopback.
Each test runs a real server on a loopback socket, attackers on 127.x addresses other than
127.0.0.1, honest players on 127.0.0.1; the attacker's figures are the before.

- 1: a stranger took a reserved room's name by pushing its reservation out of the 4,096 cap (72
  addresses over three /24s, 4,096 reservations in 9.3 s), and the host's rejoin got
  `wrong_password`. Now rooms nobody really used are not reserved, a network has a share of the
  reservations, and past the cap the network holding the most loses its weakest.
- 2: the TURN and look-up budgets counted a whole address: 40 addresses of one /24 got 800 TURN
  credentials in 4 s. Now a network (/24, /64) has `network_share` times an address's budget.
- 3: `/api/rooms/NAME` read X-Forwarded-For behind a `--proxy-header forwarded` proxy, so its
  look-up budget was the spoofer's to reset. Now every handler asks `Server.source_of`.
- 4: a flood of HTTP requests from many addresses drained the log's one global bucket, and honest
  players' welcome, join and leave lines were not written. Now each network has a share of the
  lines, players' own doings a bucket of their own, and access lines go by the forwarded source.
- 5: with `--hide-private-rooms`, joins by name found the hidden rooms (`password_required`)
  without the look-up budget. Now they take from it.
- 6: a past member reopening its reserved room was charged to the room's guess budget, and a
  guess its own address's share refused still spent the room's. Now neither is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from rendezvous import ice, listener
from rendezvous.access import AccessLimits
from rendezvous.app import Config, create_app
from rendezvous.cli import public_guard
from rendezvous.fairness import network_of
from rendezvous.logs import LogSampler
from rendezvous.reservations import Reservation, ReservationLimits, Reservations
from rendezvous.rooms import Lobby
from rendezvous.state import SERVER
from tests.rendezvous_support import OPEN_SOURCES, Player, config_for, from_address, running

ALICE, BOB = "a" * 64, "b" * 64


async def player(
    session: aiohttp.ClientSession, base: str, name: str, key: SigningKey | None = None
) -> Player:
    ws = await session.ws_connect(f"{base}/ws")
    someone = Player(ws, name)
    if key is not None:
        someone.signing, someone.key = key, key.verify_key.encode().hex()
    await someone.login()
    return someone


async def answer(someone: Player, *kinds: str) -> dict[str, object]:
    """The next message of one of `kinds`, or the next error."""
    while True:
        body = await someone.next()
        if body["type"] in kinds or body["type"] == "error":
            return body


# ---- 1: reservations pushed out by a flood ------------------------------------------------------


def held(name: str, source: str, tenure: float = 0.0) -> Reservation:
    return Reservation(name, "demo", 4, None, False, source, (ALICE, BOB), (), tenure)


def test_past_the_cap_the_network_holding_the_most_loses_its_weakest() -> None:
    reservations = Reservations(ReservationLimits(max_total=10, per_source=64, per_network=6))
    reservations.hold(held("friends", "192.0.2.1", tenure=1.0))
    for index in range(40):  # three networks, many addresses each
        reservations.hold(held(f"z{index}", f"198.51.{index % 3}.{index}"))
    names = reservations.names()
    assert "friends" in names and len(names) == 10
    assert max(sum(n.startswith("z") and int(n[1:]) % 3 == k for n in names) for k in range(3)) <= 3
    # Each network holds 3 and the honest one 1: a new one of the attacker's goes before any honest one.
    reservations.hold(held("late", "203.0.113.7", tenure=0.0))  # a fourth network, weakest of all
    assert "friends" in reservations.names()


def test_a_network_has_a_share_of_the_reservations() -> None:
    reservations = Reservations(ReservationLimits(max_total=100, per_source=64, per_network=8))
    for index in range(30):
        reservations.hold(held(f"z{index}", f"198.51.100.{index}"))
    assert reservations.names() == [f"z{index}" for index in range(22, 30)]  # its own oldest went


def test_a_room_one_key_opened_and_left_at_once_is_not_reserved_but_a_used_one_is() -> None:
    lobby = Lobby()
    lobby.join(ALICE, "alice", "demo", "probe", None, now=0.0)
    lobby.disconnect(ALICE, now=0.01)
    assert "probe" not in lobby.reservations
    lobby.join(ALICE, "alice", "demo", "solo", None, now=0.0)
    lobby.disconnect(ALICE, now=30.0)  # one player who stayed
    lobby.join(ALICE, "alice", "demo", "pair", None, now=0.0)
    lobby.join(BOB, "bob", "demo", "pair", None, now=0.0)
    lobby.disconnect(ALICE, now=0.1)
    lobby.disconnect(BOB, now=0.1)  # two players, however briefly
    assert "solo" in lobby.reservations and "pair" in lobby.reservations


def test_the_most_recent_bans_are_kept_however_many_were_kicked() -> None:
    lobby = Lobby()
    lobby.join(ALICE, "alice", "demo", "club", None)
    kicked = [f"{index:064x}" for index in range(300)]  # the last kicked sorts last
    for key in kicked:
        lobby.join(key, f"p{key[-4:]}", "demo", "club", None)
        lobby.kick(ALICE, key)
    lobby.disconnect(ALICE)
    reservation = lobby.reservations.get("club") or pytest.fail()
    assert kicked[-1] in reservation.banned and kicked[0] not in reservation.banned
    lobby.join(ALICE, "alice", "demo", "club", None)
    room = lobby.room("club") or pytest.fail()
    assert kicked[-1] in room.banned and len(room.banned) == 256


async def _churn(base: str, address: str, index: int, rooms: int) -> None:
    """Open rooms and leave them at once, from ADDRESS: two keys each (so each is 'used')."""
    async with from_address(address) as session:
        one, two = await player(session, base, f"a{index}"), await player(session, base, f"b{index}")
        for number in range(rooms):
            for someone in (one, two):
                await someone.join(f"z{index}-{number}")
                assert (await answer(someone, "joined"))["type"] == "joined"
            for someone in (one, two):
                await someone.send(type="leave")
                assert (await answer(someone, "left"))["type"] == "left"
        await one.ws.close()
        await two.ws.close()


async def test_a_flood_of_emptied_rooms_does_not_push_out_a_real_rooms_reservation(games: Path) -> None:
    """Before: 72 addresses over three /24s filled the cap in 9.3 s, the honest reservation went
    (the oldest), a stranger took the name and the host's rejoin got `wrong_password`."""
    host_key = SigningKey.generate()
    config = config_for(games, max_reservations=48)
    async with running(config) as base, aiohttp.ClientSession() as honest:
        host, friend = await player(honest, base, "host", host_key), await player(honest, base, "friend")
        for someone in (host, friend):
            await someone.join("friends", password="secret")
            await someone.expect("joined")
        await host.ws.close()
        await friend.ws.close()  # a blip: everyone drops
        addresses = [f"127.2.{index % 3}.{10 + index // 3}" for index in range(6)]
        await asyncio.gather(*(_churn(base, a, i, 12) for i, a in enumerate(addresses)))  # 72 rooms
        async with honest.get(f"{base}/healthz") as response:
            assert (await response.json())["reserved_rooms"] == 48  # the flood did fill the cap
        async with from_address("127.0.0.5") as attacker:
            stranger = await player(attacker, base, "stranger")
            await stranger.join("friends", password="mine")
            assert (await answer(stranger, "joined")).get("code") == "room_reserved"
        host = await player(honest, base, "host", host_key)
        await host.join("friends", password="secret")
        assert (await answer(host, "joined"))["type"] == "joined"


async def test_rooms_opened_and_left_at_once_make_no_reservations(games: Path) -> None:
    """Before: each such room was reserved (a join probing a name became the prober's for 300 s)."""
    async with running(config_for(games)) as base, from_address("127.0.0.5") as attacker:
        prober = await player(attacker, base, "prober")
        for index in range(20):
            await prober.join(f"probe{index}")
            await prober.expect("joined")
            await prober.send(type="leave")
            await prober.expect("left")
        async with attacker.get(f"{base}/healthz") as response:
            assert (await response.json())["reserved_rooms"] == 0


# ---- 3: every source is read the same way -----------------------------------------------------


async def test_room_lookups_behind_a_forwarded_proxy_are_charged_to_the_forwarded_source(games: Path) -> None:
    """Before: `/api/rooms/NAME` read X-Forwarded-For even with `--proxy-header forwarded`, so a
    client behind the proxy named itself anew in each request: 300 look-ups, none refused."""
    proxy = "127.0.0.9"
    access = AccessLimits(lookup_rate=0.1, lookup_burst=5)
    config = config_for(games, trusted_proxies=frozenset({proxy}), proxy_header="forwarded", access=access)
    async with running(config) as base, from_address(proxy) as through_proxy:
        codes: Counter[int] = Counter()
        for index in range(30):
            spoofed = {"Forwarded": "for=127.0.0.5", "X-Forwarded-For": f"10.9.{index}.1"}
            async with through_proxy.get(f"{base}/api/rooms/room{index}", headers=spoofed) as response:
                codes[response.status] += 1
        assert codes == {404: 5, 429: 25}, codes
        honest = {"Forwarded": "for=127.0.0.1"}
        async with through_proxy.get(f"{base}/api/rooms/x", headers=honest) as response:
            assert response.status == 404  # an honest client behind the same proxy is answered


# ---- 6: a room's guess budget ------------------------------------------------------------------


async def _until_no_rooms(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(5):
        while True:
            async with session.get(f"{base}/healthz") as response:
                if (await response.json())["rooms"] == 0:
                    return
            await asyncio.sleep(0.01)


async def _spend_guesses(someone: Player, room: str, times: int) -> Counter[str]:
    codes: Counter[str] = Counter()
    for _ in range(times):
        await someone.join(room, password="guess")
        codes[str((await answer(someone, "joined")).get("code"))] += 1
    return codes


async def test_a_past_member_reopening_its_reserved_room_is_not_held_back_by_guessers(games: Path) -> None:
    """Before: the guessers spent the room's budget, then the blip, and the host's reopening
    of its reserved room was answered `try_later`."""
    host_key = SigningKey.generate()
    config = config_for(games, access=AccessLimits(guess_rate=0.01, guess_burst=3))
    async with running(config) as base, aiohttp.ClientSession() as honest, from_address("127.0.5.5") as bad:
        host, friend = await player(honest, base, "host", host_key), await player(honest, base, "friend")
        for someone in (host, friend):
            await someone.join("party", password="secret")
            await someone.expect("joined")
        guesser = await player(bad, base, "guesser")
        codes = await _spend_guesses(guesser, "party", 5)  # (the friend's join took one token)
        assert codes == {"wrong_password": 2, "try_later": 3}, codes
        await host.ws.close()
        await friend.ws.close()  # a blip: the room is reserved for them
        await _until_no_rooms(honest, base)
        host = await player(honest, base, "host", host_key)
        await host.join("party", password="secret")
        assert (await answer(host, "joined"))["type"] == "joined"


async def test_an_address_refused_its_own_share_does_not_spend_the_rooms_guesses(games: Path) -> None:
    """Before: each guess took the room's token before the address's share refused it, so 10
    refused guesses left a newcomer with the right password `try_later`."""
    stingy = replace(OPEN_SOURCES, password_rate=0.001, password_burst=2)
    config = config_for(games, sources=stingy, access=AccessLimits(guess_rate=0.01, guess_burst=3))
    async with running(config) as base, aiohttp.ClientSession() as honest, from_address("127.0.5.5") as bad:
        host = await player(honest, base, "host")
        await host.join("party", password="secret")
        await host.expect("joined")
        guesser = await player(bad, base, "guesser")
        codes = await _spend_guesses(guesser, "party", 10)
        assert codes == {"wrong_password": 2, "rate_limited": 8}, codes
        async with from_address("127.0.0.2") as newcomer_session:
            newcomer = await player(newcomer_session, base, "newcomer")
            await newcomer.join("party", password="secret")
            assert (await answer(newcomer, "joined"))["type"] == "joined"


# ---- 2: TURN credentials and look-ups per network ------------------------------------------------


def turn_users(servers: object) -> list[str]:
    assert isinstance(servers, list)
    return [server["username"] for server in servers if "username" in server]


async def _harvest(base: str, address: str, joins: int) -> int:
    """Join and leave quick rooms from ADDRESS; how many sets of TURN credentials it got."""
    handed = 0
    async with from_address(address) as session:
        harvester = await player(session, base, "h")
        for _ in range(joins):
            await harvester.join(None)
            handed += len(turn_users((await answer(harvester, "joined"))["ice_servers"]))
            await harvester.send(type="leave")
            await answer(harvester, "left")
        await harvester.ws.close()
    return handed


async def test_turn_credentials_are_a_networks_share_not_every_addresss(games: Path) -> None:
    """Before: each address of a /24 had its own share: 40 addresses got 800 sets in 4 s."""
    turn = ice.IceConfig(turn_urls=("turn:turn.example.org:3478",), turn_secret=ice.TurnSecret(b"s" * 32))
    access = AccessLimits(turn_rate=0.001, turn_burst=2)  # a network: 4 x 2
    async with running(config_for(games, ice=turn, access=access)) as base:
        handed = await asyncio.gather(*(_harvest(base, f"127.6.0.{10 + i}", 3) for i in range(12)))
        assert sum(handed) == 8, handed  # before: 24, two for each of 12 addresses
        assert await _harvest(base, "127.0.0.1", 1) == 1  # another network still gets its own


async def test_room_lookups_are_a_networks_share_not_every_addresss(games: Path) -> None:
    access = AccessLimits(lookup_rate=0.01, lookup_burst=3)  # a network: 4 x 3
    async with running(config_for(games, access=access)) as base:
        codes: Counter[int] = Counter()
        for index in range(24):
            address = f"127.6.0.{10 + index}"
            url = f"{base}/api/rooms/r{index}"
            async with from_address(address) as session, session.get(url) as response:
                codes[response.status] += 1
        assert codes == {404: 12, 429: 12}, codes  # before: 24 answered, one address after another
        async with aiohttp.ClientSession() as honest, honest.get(f"{base}/api/rooms/r") as response:
            assert response.status == 404


# ---- 5: hidden rooms found by joining ------------------------------------------------------------


async def test_joins_by_name_cannot_find_hidden_rooms_faster_than_lookups(games: Path) -> None:
    """Before: joins with password null found all 8 hidden rooms among 301 names in 30.7 s
    (`password_required` says the room exists); look-ups over HTTP were limited, joins not."""
    access = AccessLimits(lookup_rate=0.01, lookup_burst=5)
    config = config_for(games, hide_private_rooms=True, access=access)
    async with running(config) as base, from_address("127.0.5.5") as bad:
        sessions = [from_address(f"127.0.0.{1 + i}") for i in range(9)]  # 8 hosts, then a friend
        try:
            hosts = [await player(sessions[i], base, f"h{i}") for i in range(8)]
            for index, host in enumerate(hosts):
                await host.join(f"hidden{index * 5}", password="pw")
                await host.expect("joined")
            prober = await player(bad, base, "prober")
            codes: Counter[str] = Counter()
            for index in range(40):
                await prober.join(f"hidden{index}", password=None)
                body = await answer(prober, "joined")
                codes[str(body.get("code", body["type"]))] += 1
                if body["type"] == "joined":
                    await prober.send(type="leave")
                    await answer(prober, "left")
            assert codes["password_required"] <= 1 and codes["try_later"] == 35, codes
            friend = await player(sessions[8], base, "friend")  # its network has look-ups left
            await friend.join("hidden0", password="pw")
            assert (await answer(friend, "joined"))["type"] == "joined"
        finally:
            for session in sessions:
                await session.close()


# ---- 4: honest players' lines kept out of the log ------------------------------------------------


@asynccontextmanager
async def running_with_sampler(config: Config, sampler: LogSampler) -> AsyncIterator[str]:
    """`running`, with a log sampler whose global budget is small enough to drain in a test."""
    app = create_app(config)
    app[SERVER].log_sampler = app[listener.LOG_SAMPLER] = sampler
    runner = listener.runner(app, config.keepalive_timeout, shutdown_timeout=2.0)
    await runner.setup()
    site = listener.GuardedSite(runner, "127.0.0.1", 0, public_guard(config), config.tls_handshake_timeout)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _requests(base: str, address: str, count: int, headers: dict[str, str] | None = None) -> None:
    async with from_address(address) as session:
        for _ in range(count):
            async with session.get(f"{base}/api/games/nope", headers=headers) as response:
                await response.read()


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_flood_from_many_addresses_does_not_keep_players_lines_out_of_the_log(
    games: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: 260 addresses of two /24s x 21 HTTP requests drained the one global bucket, and an
    honest player's welcome, join and leave lines were not written."""
    caplog.set_level(logging.INFO)
    sampler = LogSampler(window=600.0, global_rate=0.01, global_burst=200)
    async with running_with_sampler(config_for(games), sampler) as base:
        flood = [f"127.3.{i % 2}.{1 + i // 2}" for i in range(40)]
        await asyncio.gather(*(_requests(base, address, 10) for address in flood))  # 400 lines' worth
        async with aiohttp.ClientSession() as honest:
            someone = await player(honest, base, "honest")
            await someone.join("club")
            await someone.expect("joined")
            await someone.send(type="leave")
            await someone.expect("left")
            await someone.ws.close()
    assert _lines(caplog, "joined room 'club'") and _lines(caplog, "left room 'club'")
    assert len(_lines(caplog, "/api/games/nope")) <= 2 * 4 * 20  # each network's share


async def test_access_lines_behind_a_proxy_are_sampled_and_named_by_the_forwarded_source(
    games: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every line behind a proxy was sampled (and named) by the proxy's address, so a
    flooder behind it used up every other client's lines."""
    caplog.set_level(logging.INFO)
    proxy = "127.0.0.9"
    config = config_for(games, trusted_proxies=frozenset({proxy}))
    async with running(config) as base:
        await _requests(base, proxy, 50, {"X-Forwarded-For": "127.0.5.5"})
        await _requests(base, proxy, 1, {"X-Forwarded-For": "127.0.8.1"})
    assert len(_lines(caplog, '127.0.5.5 "GET')) == 20
    assert len(_lines(caplog, '127.0.8.1 "GET')) == 1


def test_summaries_count_a_networks_sources_together_and_keep_others_apart() -> None:
    """Before: the 20 largest sources were shown one by one and the rest, honest ones among
    them, added up in one total."""
    sampler = LogSampler(window=60.0, per_window=1, max_summaries=3, global_rate=1e6, global_burst=10**6)
    for index in range(100):
        for _ in range(5):
            sampler.admit(f"198.51.100.{index}", "http 404", 0.0)
    for _ in range(3):
        sampler.admit("192.0.2.1", "refused busy", 0.0)
    summaries = {(s.source, s.kind): s.count for s in sampler.flush(60.0)}
    # The network wrote its share (4 lines) of 500; the honest address one of its 3.
    assert summaries == {("198.51.100.0/24", "http 404"): 496, ("192.0.2.1", "refused busy"): 2}


def test_a_player_alone_who_stayed_keeps_its_room_reserved_across_two_blips() -> None:
    lobby = Lobby()
    lobby.join(ALICE, "alice", "demo", "solo", None, now=0.0)
    lobby.disconnect(ALICE, now=30.0)
    lobby.join(ALICE, "alice", "demo", "solo", None, now=31.0)  # it reopens its room ...
    lobby.disconnect(ALICE, now=31.5)  # ... and the next blip comes at once
    assert "solo" in lobby.reservations


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 11), st.integers(0, 3), st.floats(0, 9)), max_size=80)
)
@example(
    [
        (True, 0, 0, 5.0),
        (True, 1, 0, 5.0),
        (True, 2, 0, 5.0),
        (True, 3, 1, 1.0),
        (True, 4, 1, 1.0),
        (True, 5, 2, 1.0),
        (True, 6, 3, 9.0),
    ]
)  # (the weakest is not of the most crowded network)
def test_the_cap_keeps_every_bound_and_pushes_out_only_from_the_most_crowded(
    steps: list[tuple[bool, int, int, float]],
) -> None:
    """Against the bounds: never more than the cap, a network's share or an address's; what goes
    to make room past the cap is of a network holding the most; the count index agrees."""
    limits = ReservationLimits(max_total=6, per_source=3, per_network=4)
    reservations = Reservations(limits)
    for hold, number, network, tenure in steps:
        name = f"r{number}"
        if not hold:
            reservations.release(name)
            continue
        reservations.release(name)  # (a name held again replaces itself first)
        before = {r.name: network_of(r.source) for r in map(reservations.get, reservations.names()) if r}
        crowded = Counter(before.values())
        source = f"198.51.{network}.{number % 2}"
        crowded[network_of(source)] += 1
        reservations.hold(held(name, source, tenure))
        gone = set(before) - set(reservations.names())
        own = {n for n in before if network_of(source) == before[n]}
        if len(before) >= limits.max_total and gone - own:  # made room: not its own network's
            (lost,) = gone
            assert crowded[before[lost]] == max(crowded.values())
        kept = [r for r in map(reservations.get, reservations.names()) if r]
        assert len(kept) <= limits.max_total
        by_network = Counter(network_of(r.source) for r in kept)
        assert all(n <= limits.per_network for n in by_network.values())
        assert all(n <= limits.per_source for n in Counter(r.source for r in kept).values())
        assert {c: set(ns) for c, ns in reservations._networks_at.items()} == {
            c: {n for n, k in by_network.items() if k == c} for c in set(by_network.values())
        }
