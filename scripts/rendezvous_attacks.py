"""The attacks of issues 16 and 29, each run from one loopback address (or, where the attack
needs many, from its own block of them) until cancelled, for `scripts/bench_rendezvous.py
--attacks`: what honest players see while one host misbehaves.
The attacks inside a room (issue 29) open the bench's honest rooms first, for 8, and wait there.

Each attack is an `async def attack(url, address)` that keeps up its pressure until cancelled and
counts what it did in an `AttackTally`. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rendezvous.wire import PROTOCOL_VERSION, signed_hello_bytes


@dataclass
class AttackTally:
    welcomed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    gained: int = 0  # what the attack was after: TURN credentials, rooms found, wrong guesses checked

    def refusal(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


TLS_TRUST_ENV = "MSXSYNC_BENCH_CA"  # the CA file of a TLS server under test, if it is one


def session_from(address: str) -> aiohttp.ClientSession:
    """A session whose connections come from `address`, trusting the bench's CA when it set one."""
    ca = os.environ.get(TLS_TRUST_ENV)
    tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0, ssl=tls)
    return aiohttp.ClientSession(connector=connector)


async def hello(
    ws: aiohttp.ClientWebSocketResponse, tally: AttackTally, name: str | None = None
) -> str | None:
    """Answer the challenge with a fresh key (returned; by default with a name of its own: names
    are unique in a room); None when the server refused instead."""
    first = json.loads((await ws.receive(timeout=10)).data)
    if first["type"] == "error":
        tally.refusal(first["code"])
        return None
    signing = SigningKey.generate()
    signature = signing.sign(signed_hello_bytes(bytes.fromhex(first["nonce"]))).signature.hex()
    key = signing.verify_key.encode().hex()
    message = {"type": "hello", "version": PROTOCOL_VERSION, "name": name or f"x{key[:12]}", "key": key}
    await ws.send_json({**message, "signature": signature})
    tally.welcomed += 1
    return key


async def reply(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, Any]:
    """The next message of one of `kinds`, or the next error."""
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"the server closed the connection ({msg.type.name})")
        body: dict[str, Any] = json.loads(msg.data)
        if body["type"] in kinds or body["type"] == "error":
            return body


def turn_in(servers: object) -> int:
    """How many TURN credentials an `ice_servers` list holds."""
    return (
        sum(1 for s in servers if isinstance(s, dict) and "credential" in s)
        if isinstance(servers, list)
        else 0
    )


def block_of(address: str, count: int) -> list[str]:
    """`count` loopback addresses of the attacker's own: 127.0.0.2 has 127.2.0.1, 127.2.0.2, ..."""
    last = address.rsplit(".", 1)[1]
    return [f"127.{last}.{i // 250}.{i % 250 + 1}" for i in range(count)]


async def drain(ws: aiohttp.ClientWebSocketResponse, tally: AttackTally) -> None:
    """Read (so pings are answered) and count refusals, until the socket ends."""
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            body = json.loads(msg.data)
            if body["type"] == "error":
                tally.refusal(body["code"])


async def _hold(session: aiohttp.ClientSession, url: str, tally: AttackTally, room: str | None) -> None:
    try:
        await _hold_one(session, url, tally, room)
    except (aiohttp.ClientError, OSError, TimeoutError):
        tally.refusal("connection_reset")  # the listener's per-address cap closes it at accept


async def _hold_one(session: aiohttp.ClientSession, url: str, tally: AttackTally, room: str | None) -> None:
    async with session.ws_connect(url) as ws:
        if not await hello(ws, tally):
            return
        if room is not None:
            await ws.send_json({"type": "join", "game": "bench", "room": room})
        await drain(ws, tally)


async def slots(url: str, address: str, tally: AttackTally, rooms: bool = False) -> None:
    """Open welcomed, ping-answering sockets until refused (and with `rooms`, one room each)."""
    async with session_from(address) as session, asyncio.TaskGroup() as group:
        for i in range(2000):
            group.create_task(_hold(session, url, tally, f"squat-{i}" if rooms else None))
            await asyncio.sleep(0.001)  # pacing the attacker, not synchronising a test
        await asyncio.Event().wait()


async def rooms(url: str, address: str, tally: AttackTally) -> None:
    await slots(url, address, tally, rooms=True)


async def _guess(session: aiohttp.ClientSession, url: str, tally: AttackTally, owner: bool) -> None:
    try:
        await _guess_on(session, url, tally, owner)
    except (aiohttp.ClientError, OSError, TimeoutError):
        tally.refusal("connection_reset")


async def _guess_on(session: aiohttp.ClientSession, url: str, tally: AttackTally, owner: bool) -> None:
    async with session.ws_connect(url) as ws:
        if not await hello(ws, tally):
            return
        password = "secret" if owner else "guess"
        while True:
            await ws.send_json({"type": "join", "game": "bench", "room": "vault", "password": password})
            tally.sent += 1
            body = json.loads((await ws.receive(timeout=30)).data)
            while body["type"] not in ("error", "joined"):
                body = json.loads((await ws.receive(timeout=30)).data)
            if body["type"] == "joined":
                await drain(ws, tally)
                return
            tally.refusal(body["code"])
            tally.gained += body["code"] == "wrong_password"  # a guess the server hashed


async def passwords(url: str, address: str, tally: AttackTally) -> None:
    """18 connections guessing one room's password as fast as the answers come."""
    async with session_from(address) as session, asyncio.TaskGroup() as group:
        group.create_task(_guess(session, url, tally, owner=True))
        for _ in range(18):
            group.create_task(_guess(session, url, tally, owner=False))


async def chat_reconnects(url: str, address: str, tally: AttackTally) -> None:
    """Reconnect with a new key each time and chat into one room as fast as possible."""
    async with session_from(address) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.ws_connect(url) as ws:
                    if not await hello(ws, tally):
                        continue
                    await ws.send_json({"type": "join", "game": "bench", "room": "spam"})
                    for n in range(200):
                        await ws.send_json({"type": "chat", "text": f"spam {n}"})
                        tally.sent += 1


async def slow_readers(url: str, address: str, tally: AttackTally) -> None:
    """12 receivers that never read, in a room with a sender pushing 60 KB signals at them."""
    async with session_from(address) as session, contextlib.AsyncExitStack() as stack:
        sinks = []
        for i in range(3):  # rooms of four: three sleepers and one sender each
            sender = await stack.enter_async_context(session.ws_connect(url))
            await hello(sender, tally)
            await sender.send_json({"type": "join", "game": "bench", "room": f"sink-{i}"})
            keys = []
            for _ in range(3):
                sleeper = await stack.enter_async_context(session.ws_connect(url, max_msg_size=0))
                challenge = json.loads((await sleeper.receive(timeout=10)).data)
                signing = SigningKey.generate()
                nonce = bytes.fromhex(challenge["nonce"])
                key = signing.verify_key.encode().hex()
                signature = signing.sign(signed_hello_bytes(nonce)).signature.hex()
                message = {"type": "hello", "version": PROTOCOL_VERSION, "name": f"s{key[:12]}", "key": key}
                await sleeper.send_json({**message, "signature": signature})
                await sleeper.send_json({"type": "join", "game": "bench", "room": f"sink-{i}"})
                keys.append(key)
            sinks.append((sender, keys))
        blob = {"blob": "x" * 60_000}
        while True:
            for sender, keys in sinks:
                for key in keys:
                    with contextlib.suppress(ConnectionError):
                        await sender.send_json({"type": "signal", "to": key, "data": blob})
                        tally.sent += 1
            await asyncio.sleep(0)


async def idle_http(url: str, address: str, tally: AttackTally) -> None:
    """Hold 1,000 idle TCP connections to the HTTP port, opening new ones as they are closed."""
    await _hold_sockets(url, address, tally, 1000)


async def _hold_sockets(url: str, address: str, tally: AttackTally, count: int) -> None:
    """Hold COUNT TCP connections that never say a word, opening a new one as each is closed."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)

    async def hold() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, int(port), local_addr=(address, 0))
            except OSError:
                tally.refusal("connect_failed")
                await asyncio.sleep(0.1)
                continue
            tally.welcomed += 1
            with contextlib.suppress(OSError):
                await reader.read()  # until the server closes it
            tally.refusal("closed_by_server")
            writer.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            group.create_task(hold())
            await asyncio.sleep(0)


async def _answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next `joined` or `error` (skipping rosters and events)."""
    while True:
        body: dict[str, Any] = json.loads((await ws.receive(timeout=30)).data)
        if body["type"] in ("joined", "error"):
            return body


async def _take_over_once(session: aiohttp.ClientSession, url: str, tally: AttackTally, name: str) -> None:
    async with session.ws_connect(url) as member:  # a room whose only member then drops
        if not await hello(member, tally):
            return
        await member.send_json({"type": "join", "game": "bench", "room": name, "password": "theirs"})
        if (await _answer(member))["type"] != "joined":
            return
    async with session.ws_connect(url) as stranger:  # another key asks for the name at once
        if not await hello(stranger, tally):
            return
        await stranger.send_json({"type": "join", "game": "bench", "room": name, "password": "mine"})
        tally.sent += 1
        answer = await _answer(stranger)
        tally.refusal("took_the_name" if answer["type"] == "joined" else answer["code"])


async def name_takeover(url: str, address: str, tally: AttackTally) -> None:
    """Issue 29, F4: a room is emptied (its member's socket drops) and a stranger asks for its name
    at once, with a password of its own, in a loop over 200 names; "took_the_name" counts the rooms
    it got (every one, before names were reserved). It also fills the reserved names."""
    async with session_from(address) as session:
        for round_ in range(10**9):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                await _take_over_once(session, url, tally, f"takeover-{round_ % 200}")


async def turn_harvest(url: str, address: str, tally: AttackTally) -> None:
    """Say hello, join a quick room and leave (three times), reconnect with a new key, again and
    again from 8 connections, keeping every TURN credential handed out (issue 29, F8: 107 a second
    from one address, 12 hours each, from the welcome alone)."""

    async def harvest(session: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                async with session.ws_connect(url) as ws:
                    await _harvest_on(ws, tally)
            await asyncio.sleep(0.01)

    async with session_from(address) as session, asyncio.TaskGroup() as group:
        for _ in range(8):
            group.create_task(harvest(session))


async def _harvest_on(ws: aiohttp.ClientWebSocketResponse, tally: AttackTally) -> None:
    if not await hello(ws, tally):
        return
    welcome = await reply(ws, "welcome")
    if welcome["type"] == "error":
        tally.refusal(welcome["code"])
        return
    tally.gained += turn_in(welcome.get("ice_servers"))
    for _ in range(3):
        await ws.send_json({"type": "join", "game": "bench", "room": None})
        tally.sent += 1
        joined = await reply(ws, "joined")
        if joined["type"] == "error":
            tally.refusal(joined["code"])
            return
        tally.gained += turn_in(joined.get("ice_servers"))
        await ws.send_json({"type": "leave"})
        await reply(ws, "left")


async def room_guesses(url: str, address: str, tally: AttackTally) -> None:
    """50 addresses of the attacker's block guess one room's password, each as fast as its
    answers come (issue 29, F10: 19 guesses a second at one room, honest joins `busy` 3 in 5)."""
    addresses = block_of(address, 50)

    async def guess_on(session: aiohttp.ClientSession) -> None:
        while True:  # reconnect whenever the server closes the connection (flooding, say)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                async with session.ws_connect(url) as ws:
                    if not await hello(ws, tally):
                        await asyncio.sleep(0.1)
                        continue
                    while True:
                        await ws.send_json(
                            {"type": "join", "game": "bench", "room": "vault", "password": "x"}
                        )
                        tally.sent += 1
                        body = await reply(ws, "joined")
                        if body["type"] == "error":
                            tally.refusal(body["code"])
                            tally.gained += body["code"] == "wrong_password"  # a guess hashed

    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
        sessions = [await stack.enter_async_context(session_from(a)) for a in addresses]
        group.create_task(_guess(sessions[0], url, tally, owner=True))
        await asyncio.sleep(1)  # the owner's room exists before the guessing starts
        for session in sessions:
            group.create_task(guess_on(session))


async def hidden_rooms_probe(url: str, address: str, tally: AttackTally) -> None:
    """Open 8 passworded rooms, then look names up on `GET /api/rooms/NAME` as fast as the answers
    come, from 8 connections (issue 29, F11: all 10 hidden rooms found in 1.8 s)."""
    base = url.removesuffix("/ws")
    async with session_from(address) as session, contextlib.AsyncExitStack() as stack:
        for i in range(8):
            ws = await stack.enter_async_context(session.ws_connect(url))
            if await hello(ws, tally):
                await ws.send_json({"type": "join", "game": "bench", "room": f"hidden-{i}", "password": "pw"})

        async def probe(worker: int) -> None:
            n = worker
            while True:
                name = f"hidden-{n % 8}" if n % 5 == 0 else f"guess-{n}"
                n += 8
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{base}/api/rooms/{name}") as answer:
                        tally.sent += 1
                        if answer.status == 200:
                            tally.gained += name.startswith("hidden-")
                        elif answer.status != 404:
                            tally.refusal(str(answer.status))

        async with asyncio.TaskGroup() as group:
            for worker in range(8):
                group.create_task(probe(worker))


async def tls_half_open(url: str, address: str, tally: AttackTally) -> None:
    """Issue 29: 3,000 TCP connections that never start (or finish) a TLS handshake, opened anew
    as the server closes them. Against a plain HTTP server it is `idle_http` with more sockets."""
    await _hold_sockets(url, address, tally, 3000)


def network_addresses(address: str, count: int = 125) -> list[str]:
    """`count` addresses of the /24 of `address`, from `address` on (127.0.0.2 ... 127.0.0.126)."""
    prefix, _, last = address.rpartition(".")
    return [f"{prefix}.{(int(last) + i - 1) % 254 + 1}" for i in range(count)]


async def subnet_slots(url: str, address: str, tally: AttackTally) -> None:
    """Issue 29: 125 addresses of one /24, each holding up to 16 welcomed sockets with a room
    each: before the per-network shares, they took all 2,000 connections and 1,000 rooms."""
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
        sessions = [await stack.enter_async_context(session_from(a)) for a in network_addresses(address)]
        for i in range(16):
            for n, session in enumerate(sessions):
                group.create_task(_hold(session, url, tally, f"net-{n}-{i}"))
                await asyncio.sleep(0.0005)  # pacing the attacker, not synchronising a test
        await asyncio.Event().wait()


async def log_flood(url: str, address: str, tally: AttackTally) -> None:
    """Issue 29: one address asking for rooms that do not exist and opening refused sockets as
    fast as the answers come: one refusal or access line each before the sampling."""
    base = url.removesuffix("/ws")

    async def ask(session: aiohttp.ClientSession, n: int) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{base}/api/rooms/nothing-{n}") as resp:
                    tally.refusal(str(resp.status))
                    tally.sent += 1

    async def refused(session: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.ws_connect(url) as ws:
                    first = json.loads((await ws.receive(timeout=10)).data)
                    tally.refusal(str(first.get("code", first["type"])))
                    tally.sent += 1

    async with session_from(address) as session, asyncio.TaskGroup() as group:
        for _ in range(16):  # its share of sockets, so that every further one is refused
            group.create_task(_hold(session, url, tally, None))
        await asyncio.sleep(1.0)
        for n in range(4):
            group.create_task(ask(session, n))
            group.create_task(refused(session))


# --- inside a room (issue 29) ------------------------------------------------------------------

BENCH_ROOMS = ("bench-0", "bench-1", "bench-2")  # honest rooms of scripts/bench_rendezvous.py
Act = Callable[[aiohttp.ClientWebSocketResponse, str, list[str], AttackTally], Coroutine[Any, Any, None]]


async def _inside(session: aiohttp.ClientSession, url: str, tally: AttackTally, room: str, act: Act) -> None:
    """Be a member of `room` (opening it for 8 if it is not there) and `act` on the others, whose
    keys the rosters tell; again after every cut-off."""
    while True:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
            async with session.ws_connect(url, max_msg_size=0) as ws:
                key = await hello(ws, tally)
                if key is not None:
                    await ws.send_json({"type": "join", "game": "bench", "room": room, "capacity": 8})
                    others: list[str] = []
                    watcher = asyncio.create_task(_watch(ws, tally, key, others))
                    try:
                        await act(ws, key, others, tally)
                    finally:
                        watcher.cancel()
        tally.refusal("connection_closed")
        await asyncio.sleep(0.1)


async def _watch(
    ws: aiohttp.ClientWebSocketResponse, tally: AttackTally, key: str, others: list[str]
) -> None:
    """Read everything (pings are answered), count refusals and keep `others` up to date."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        body = json.loads(msg.data)
        if body["type"] == "error":
            tally.refusal(body["code"])
        elif body["type"] in ("joined", "roster"):
            others[:] = [m["key"] for m in body["members"] if m["key"] != key]


async def _in_bench_rooms(url: str, address: str, tally: AttackTally, act: Act) -> None:
    async with session_from(address) as session, asyncio.TaskGroup() as group:
        for room in BENCH_ROOMS:
            group.create_task(_inside(session, url, tally, room, act))


async def _self_frames(
    ws: aiohttp.ClientWebSocketResponse, key: str, others: list[str], tally: AttackTally
) -> None:
    frame = bytes.fromhex(key) + b"x"  # to itself: refused as bad_target
    while not ws.closed:
        for _ in range(1000):
            await ws.send_bytes(frame)
        tally.sent += 1000
        await asyncio.sleep(0)  # (so that the watcher sees a close)


async def binary_flood(url: str, address: str, tally: AttackTally) -> None:
    """F2: relayed frames to itself, each refused, as fast as 4 connections go, reconnecting when cut off."""
    async with session_from(address) as session, asyncio.TaskGroup() as group:
        for n in range(4):
            group.create_task(_inside(session, url, tally, f"flood-{n}", _self_frames))


async def _bursts_at_others(
    ws: aiohttp.ClientWebSocketResponse, key: str, others: list[str], tally: AttackTally
) -> None:
    while not ws.closed:
        for other in list(others):
            frame = bytes.fromhex(other) + b"\x01"
            for _ in range(300):
                await ws.send_bytes(frame)
            tally.sent += 300
        await asyncio.sleep(0.5)


async def evict_by_relay(url: str, address: str, tally: AttackTally) -> None:
    """F3: in the honest rooms, 300 one-byte relayed frames at once to every other member, twice a second."""
    await _in_bench_rooms(url, address, tally, _bursts_at_others)


async def _emoji_at_others(
    ws: aiohttp.ClientWebSocketResponse, _: str, others: list[str], tally: AttackTally
) -> None:
    data = {"e": "\U0001f600" * 16_000}  # 64,000 bytes of UTF-8; 192,000 escaped
    while not ws.closed:
        for other in list(others):
            await ws.send_str(json.dumps({"type": "signal", "to": other, "data": data}, ensure_ascii=False))
            tally.sent += 1
            await asyncio.sleep(0.05)  # within the connection's 20 messages a second
        await asyncio.sleep(0.05)


async def emoji_signals(url: str, address: str, tally: AttackTally) -> None:
    """F5: in the honest rooms, signals of 16,000 emoji to every other member, 20 a second."""
    await _in_bench_rooms(url, address, tally, _emoji_at_others)


async def _toggle_ready(
    ws: aiohttp.ClientWebSocketResponse, _: str, __: list[str], tally: AttackTally
) -> None:
    ready = False
    while not ws.closed:
        ready = not ready
        await ws.send_json({"type": "ready", "ready": ready})
        tally.sent += 1
        await asyncio.sleep(1 / 19)  # 57 a second from the address, each connection within its 20


async def roster_toggle(url: str, address: str, tally: AttackTally) -> None:
    """F7: in the honest rooms, `ready` toggled 57 times a second in all."""
    await _in_bench_rooms(url, address, tally, _toggle_ready)


ATTACKS: dict[str, Callable[[str, str, AttackTally], Coroutine[Any, Any, None]]] = {
    "connection_slots": slots,
    "rooms": rooms,
    "password_queue": passwords,
    "chat_reconnects": chat_reconnects,
    "slow_readers": slow_readers,
    "idle_http": idle_http,
    "name_takeover": name_takeover,
    "turn_harvest": turn_harvest,
    "room_guesses": room_guesses,
    "hidden_rooms_probe": hidden_rooms_probe,
    "tls_half_open": tls_half_open,
    "subnet_slots": subnet_slots,
    "log_flood": log_flood,
    "binary_flood": binary_flood,
    "evict_by_relay": evict_by_relay,
    "emoji_signals": emoji_signals,
    "roster_toggle": roster_toggle,
}


async def _run(name: str, url: str, address: str, seconds: float) -> AttackTally:
    tally = AttackTally()
    attack = asyncio.create_task(ATTACKS[name](url, address, tally))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    attack.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
        await attack
    return tally


def main() -> int:
    """`rendezvous_attacks.py NAME WS_URL ADDRESS SECONDS`: run one attack in a process of its own
    (so that it does not share an event loop with the clients being measured), then print what
    it did as one JSON line."""
    import resource

    name, url, address, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    tally = asyncio.run(_run(name, url, address, seconds))
    report = {
        "welcomed": tally.welcomed,
        "sent": tally.sent,
        "gained": tally.gained,
        "refused": tally.refused,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
