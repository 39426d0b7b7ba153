"""Issue 29, findings 2, 3, 5 and 7: traffic inside the rendezvous WebSocket, replayed on loopback
against a real server, the attacker on 127.0.0.5 and honest players on 127.0.0.1.

- F2: binary frames refused for their target cost nothing (190,000 a second, never cut off).
- F3: 300 one-byte relayed frames got a member reading at full speed evicted as a slow reader.
- F5: signals were charged by characters and sent as escaped ASCII (16 KB charged, 192 KB sent),
  and relay bursts larger than a send queue's bound got a member evicted.
- F7: toggling `ready` sent every member a roster each time, charged to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rendezvous.fairness import SendBacklog, SourceLimits
from rendezvous.relay import FrameLimiter
from rendezvous.rosters import RosterPacer
from tests.rendezvous_support import (
    OPEN_SOURCES,
    Player,
    config_for,
    connect,
    from_address,
    logged_in,
    running,
)

ATTACKER = "127.0.0.5"


async def joined(players: list[Player], room: str = "r") -> None:
    for player in players:
        await player.join(room)
        await player.expect("joined")


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as reply:
        body: dict[str, Any] = await reply.json()
        return body


@dataclass
class Reading:
    """Everything one player reads, at full speed, until its socket closes or it is cancelled."""

    player: Player
    types: Counter[str] = field(default_factory=Counter)
    texts: list[dict[str, Any]] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    text_bytes: int = 0
    closed: int | None = None  # the close code, once closed
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async for msg in self.player.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.binary.append(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                self.text_bytes += len(msg.data.encode())
                self.types[body["type"]] += 1
                self.texts.append(body)
            self.changed.set()
        self.closed = self.player.ws.close_code or -1
        self.changed.set()

    async def wait_for(self, test: Any, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not test(self):
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def reading(player: Player) -> Any:
    reading = Reading(player)
    task = asyncio.create_task(reading.run())
    try:
        yield reading
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def errors_until_closed(player: Player, within: float = 10.0) -> tuple[list[str], aiohttp.WSMessage]:
    """The error codes a player reads until the server closes its socket, and the closing message."""
    codes = []
    async with asyncio.timeout(within):
        while True:
            msg = await player.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                if body["type"] == "error":
                    codes.append(body["code"])
            elif msg.type != aiohttp.WSMsgType.BINARY:
                return codes, msg


async def test_binary_frames_have_a_rate_and_a_flood_of_them_is_cut_off(games: Path) -> None:
    """F2: 20,000 frames to itself (each refused as `bad_target`, for nothing before: 190,000 a
    second, never cut off) take the frame bucket's tokens and get the connection closed."""
    async with (
        running(config_for(games, sources=SourceLimits())) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(bad, url, "flood") as attacker,
        logged_in(good, url, "a") as a,
        logged_in(good, url, "b") as b,
    ):
        await joined([attacker], "flood")
        await joined([a, b])
        frame = bytes.fromhex(attacker.key) + b"x"
        with contextlib.suppress(ConnectionError):  # (once the server has closed it)
            for _ in range(20_000):
                await attacker.ws.send_bytes(frame)
        codes, closing = await errors_until_closed(attacker)
        assert "flooding" in codes, codes
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008, closing
        assert closing.extra == "flooding"
        await a.send(type="signal", to=b.key, data={"n": 1})  # the honest carry on
        assert (await b.expect("signal"))["data"] == {"n": 1}
        relay = (await health(url))["relay"]
        assert relay["dropped_frame_rate"] >= 1 and relay["frames"] == 0, relay


async def test_a_burst_from_one_member_never_evicts_a_member_who_reads(games: Path) -> None:
    """F3: 300 tiny signals, then 300 one-byte relayed frames, at once, to a member reading at full
    speed: it was cut off as a slow reader ("256 messages waiting") before it read one. The
    server's reader now yields after each frame, so the victim's writer keeps up: every signal
    and every frame the relay let through arrives, none is dropped, and the victim stays."""
    async with (
        running(config_for(games)) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(bad, url, "attacker") as attacker,
        logged_in(good, url, "victim") as victim,
    ):
        await joined([attacker, victim])
        async with reading(victim) as seen:
            for n in range(300):
                await attacker.send(type="signal", to=victim.key, data={"n": n})
            await attacker.send(type="chat", text="end")
            await seen.wait_for(lambda r: r.closed is not None or r.types["chat"] == 1)
            assert seen.closed is None and seen.types["signal"] == 300, seen.types
            frame = bytes.fromhex(victim.key) + b"\x01"
            for _ in range(300):  # (the frame bucket lets about 64 through)
                await attacker.ws.send_bytes(frame)
            await attacker.send(type="chat", text="end")
            await seen.wait_for(lambda r: r.closed is not None or r.types["chat"] == 2)
            assert seen.closed is None
            relay = (await health(url))["relay"]
            assert relay["frames"] >= 1 and relay.get("dropped_recipient", 0) == 0, relay
            assert len(seen.binary) == relay["frames"], (len(seen.binary), relay)
            await victim.send(type="chat", text="still here")
            await seen.wait_for(lambda r: r.types["chat"] == 3)


async def test_what_others_relay_to_a_member_who_does_not_read_is_dropped_not_evicting_it(
    games: Path,
) -> None:
    """F3: what one member sends another that is not reading is dropped past the recipient's relay
    share (the sender is told), instead of getting the recipient evicted: nothing another member
    sends is a reason to cut a player off."""
    async with (
        running(config_for(games)) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(bad, url, "attacker") as attacker,
        connect(good, url, "sleeper", max_msg_size=0) as sleeper,
    ):
        await sleeper.login()
        await joined([attacker, sleeper])
        blob = {"blob": "x" * 60_000}
        seen: list[dict[str, Any]] = []
        for _ in range(400):  # 24 MB: kernel buffers fill long before that
            await attacker.send(type="signal", to=sleeper.key, data=blob)
            with contextlib.suppress(TimeoutError):
                seen.append(json.loads((await attacker.ws.receive(timeout=0.001)).data))
        with contextlib.suppress(TimeoutError):
            while True:
                seen.append(json.loads((await attacker.ws.receive(timeout=0.3)).data))
        kinds = Counter(body["type"] for body in seen)
        assert kinds["member_left"] == 0, kinds
        told = [body for body in seen if body["type"] == "error"]
        assert told and told[0]["code"] == "rate_limited" and "recipient" in told[0]["message"], told


async def test_a_signal_is_charged_and_sent_as_the_bytes_it_takes(games: Path) -> None:
    """F5: a signal of 16,000 emoji (64,000 bytes of UTF-8) was charged 16 KB and sent as
    192 KB of escaped ASCII. Now it goes out as it came in, and is charged what goes out: with
    100,000 bytes of relay allowance, one passes and the second is refused."""
    sources = replace(OPEN_SOURCES, relay_rate=1000.0, relay_burst=100_000)
    async with (
        running(config_for(games, sources=sources)) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(bad, url, "attacker") as attacker,
        logged_in(good, url, "victim") as victim,
    ):
        await joined([attacker, victim])
        signal = {"type": "signal", "to": victim.key, "data": {"e": "\U0001f600" * 16_000}}
        sent = json.dumps(signal, ensure_ascii=False)
        assert len(sent.encode()) < 65_536  # (within max_message)
        await attacker.ws.send_str(sent)
        msg = await victim.ws.receive(timeout=5)
        while json.loads(msg.data)["type"] != "signal":
            msg = await victim.ws.receive(timeout=5)
        assert len(msg.data.encode()) < len(sent.encode()) + 200, len(msg.data.encode())
        await attacker.ws.send_str(sent)
        error = await attacker.error("rate_limited")
        assert "relays more than" in error["message"]


async def test_relay_bursts_from_one_address_never_evict_a_member_who_reads(games: Path) -> None:
    """F5: four connections from one address, each sending its whole relay burst of 60 KB frames
    to one member reading at full speed (2 MiB in all, the address's and the room's burst, where
    1 MiB waiting gets a member evicted), got it evicted. Now the bursts fit the recipient's
    queue, and what does not fit its relay share is dropped, not queued."""
    async with (
        running(config_for(games, sources=SourceLimits())) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(good, url, "victim") as victim,
        contextlib.AsyncExitStack() as stack,
    ):
        attackers = [await stack.enter_async_context(logged_in(bad, url, f"a{n}")) for n in range(4)]
        await joined([*attackers, victim])
        async with reading(victim) as seen:
            frame = bytes.fromhex(victim.key) + bytes(60_000)

            async def burst(attacker: Player) -> None:
                for _ in range(40):  # 2.4 MB each
                    await attacker.ws.send_bytes(frame)

            await asyncio.gather(*(burst(attacker) for attacker in attackers))
            for attacker in attackers:
                await attacker.send(type="chat", text="end")
            await seen.wait_for(lambda r: r.closed is not None or r.types["chat"] == 4)
            assert seen.closed is None, seen.closed
            assert len(seen.binary) >= 4, len(seen.binary)


async def test_roster_changes_are_charged_to_whoever_makes_them_and_rosters_coalesced(
    games: Path,
) -> None:
    """F7: 238 `ready` toggles at once (the address's message burst) sent the other member 238
    events and 238 rosters. Roster changes now take tokens of the address's roster bucket (20 at
    once, 2 a second), and a room's rosters go out at most every 0.2 s, the last one showing
    the room as it is."""
    async with (
        running(config_for(games, sources=SourceLimits())) as url,
        from_address(ATTACKER) as bad,
        aiohttp.ClientSession() as good,
        logged_in(bad, url, "toggler") as attacker,
        logged_in(good, url, "honest") as honest,
    ):
        await joined([attacker, honest])
        await asyncio.sleep(0.3)  # (the joins' rosters are out)
        async with reading(honest) as seen:
            began = asyncio.get_running_loop().time()
            for n in range(238):
                await attacker.send(type="ready", ready=n % 2 == 0)
            await asyncio.sleep(1.0)
            elapsed = asyncio.get_running_loop().time() - began
        assert seen.closed is None
        events = [body for body in seen.texts if body["type"] == "member_ready"]
        rosters = [body for body in seen.texts if body["type"] == "roster"]
        assert len(events) <= 20 + 2 * elapsed + 1, (len(events), elapsed)
        assert 1 <= len(rosters) <= 2 + elapsed / 0.2, (len(rosters), elapsed)
        last = {m["key"]: m["ready"] for m in rosters[-1]["members"]}
        assert last[attacker.key] == events[-1]["ready"]  # the last roster shows the room as it is
        assert (await attacker.error("rate_limited"))["request"] == "ready"


# --- the pure parts --------------------------------------------------------------------------


def test_the_roster_pacer_sends_a_first_change_at_once_and_folds_the_next_ones() -> None:
    pacer = RosterPacer(0.2)
    assert pacer.changed("r", 10.0)
    assert not pacer.changed("r", 10.05) and not pacer.changed("r", 10.1)
    assert pacer.get_timer() == pytest.approx(10.2)
    assert pacer.due(10.19) == [] and pacer.due(10.2) == ["r"]
    assert pacer.get_timer() is None
    assert not pacer.changed("r", 10.3)  # 0.1 s after the last one: it waits for 10.4
    assert pacer.changed("s", 10.3)  # each room has its own pace
    pacer.forget_rooms({"s"})
    assert pacer.get_timer() is None and pacer.changed("r", 10.31)  # a room opened again
    assert not pacer.changed("r", 10.35)  # (waits for 10.51)
    assert pacer.changed("r", 10.36, at_once=True)  # someone came or went: now, the waiting one too
    assert pacer.get_timer() is None
    assert pacer.statistics() == {"sent": 5, "folded": 1, "waiting": 0}


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=40))
def test_rosters_go_out_at_most_once_an_interval_and_after_the_last_change(times: list[float]) -> None:
    pacer, sent = RosterPacer(0.2), list[float]()

    def until(now: float) -> None:
        while (timer := pacer.get_timer()) is not None and timer <= now:
            sent.extend(timer for _ in pacer.due(timer))

    for now in sorted(times):
        until(now)
        if pacer.changed("r", now):
            sent.append(now)
    until(float("inf"))
    assert all(later - earlier >= 0.2 - 1e-9 for earlier, later in itertools.pairwise(sent)), sent
    assert not times or sent[-1] >= max(times)


def test_what_others_relay_fits_only_the_relay_share_of_a_queue() -> None:
    backlog = SendBacklog(cap=1000, share=300, grace=1.0)
    assert backlog.relay_fits(300, 0, 256) and not backlog.relay_fits(301, 0, 256)
    assert backlog.add(200, 0.0) is None
    assert backlog.relay_fits(100, 1, 256) and not backlog.relay_fits(101, 1, 256)
    assert not backlog.relay_fits(1, 128, 256)  # half the messages at most
    assert backlog.add(700, 0.0) is None  # the server's own messages may use the rest


def test_a_frame_flood_is_cut_off_however_slowly_the_server_handles_it() -> None:
    flood = FrameLimiter(1000, 64, 0.0)  # 15,000 frames a second, as a loaded server gets to them
    verdicts = [flood.admit(n / 15_000) for n in range(15_000)]
    assert "flood" in verdicts and verdicts.index("flood") < 2_000
    steady = FrameLimiter(1000, 64, 0.0)  # 1,100 a second: a little over, refused now and then
    verdicts = [steady.admit(n / 1_100) for n in range(11_000)]
    assert "flood" not in verdicts and "limited" in verdicts
