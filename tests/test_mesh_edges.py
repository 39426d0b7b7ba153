"""Edges of the mesh adapters: ICE options, the host-address option, garbage signals, and the
signalling client against a rendezvous that sends garbage or refuses us."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from nacl.signing import SigningKey, VerifyKey

from peer.core.mesh.binding import Role
from peer.mesh.signalling import SignallingClient, SignallingRefused
from peer.mesh.webrtc import IceOptions, offering_host_addresses, role_towards, sha256_fingerprint
from rendezvous import wire
from tests.mesh_support import (
    LOOPBACK,
    LocalSignals,
    SignalRecorder,
    make_node,
    rendezvous,
    running,
    wait_all,
)

# ---- ICE options ------------------------------------------------------------------------------


def test_default_configuration_has_no_ice_servers() -> None:
    assert IceOptions().configuration().iceServers == []


def test_stun_and_turn_configuration() -> None:
    ice = IceOptions(
        stun=("stun:stun.example.org:3478",),
        turn="turn:turn.example.org:3478",
        turn_user="u",
        turn_password="p",
    )
    servers = ice.configuration().iceServers
    assert servers is not None and len(servers) == 2
    assert servers[1].username == "u" and servers[1].credential == "p"


@pytest.mark.parametrize(
    "bad",
    [
        {"stun": ("http://x",)},
        {"stun": ("turn:x:1",)},
        {"turn": "stun:x:1"},
        {"turn": "turn:has space"},
        {"host_addresses": ()},
    ],
)
def test_bad_ice_options_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        IceOptions(**bad)


def test_host_addresses_apply_only_inside_the_option() -> None:
    with offering_host_addresses(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    # Outside the option (and for connections made without it) aioice's own answer stands,
    # which never includes loopback.
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)


def test_offerer_rule_is_antisymmetric() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert role_towards(a, b) is Role.OFFERER and role_towards(b, a) is Role.ANSWERER


def test_fingerprint_parsing() -> None:
    value = ":".join(["ab"] * 32)
    sdp = f"v=0\r\na=fingerprint:sha-512 00\r\na=fingerprint:sha-256 {value}\r\n"
    assert sha256_fingerprint(sdp) == "sha-256 " + value.upper()
    with pytest.raises(ValueError):
        sha256_fingerprint("v=0\r\na=fingerprint:sha-1 00:11\r\n")


# ---- garbage signals --------------------------------------------------------------------------


async def test_garbage_signals_are_dropped_and_the_mesh_keeps_working() -> None:
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    answerer, offerer = (a, b) if role_towards(a.key, b.key) is Role.ANSWERER else (b, a)
    async with running(a, b):
        answerer.mesh.set_roster([a.key, b.key])
        for garbage in [
            "not an object",
            {"kind": "offer"},
            {"kind": "offer", "link": True, "sdp": "v=0"},
            {"kind": "offer", "link": 1, "sdp": "x" * 100_000},
            {"kind": "nonsense", "link": 1, "sdp": ""},
            {"kind": "answer", "link": 99, "sdp": "v=0"},  # no such link
            {"kind": "offer", "link": 1, "sdp": "v=0\r\ngarbage\r\n"},  # aiortc cannot parse it
        ]:
            answerer.mesh.handle_signal(offerer.key, garbage)
        answerer.mesh.handle_signal(b"\x07" * 32, {"kind": "offer", "link": 1, "sdp": "v=0"})
        offerer.mesh.set_roster([a.key, b.key])  # now the real offer comes
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)


# ---- the signalling client --------------------------------------------------------------------


async def garbage_rendezvous(request: web.Request) -> web.WebSocketResponse:
    """Speaks the protocol correctly, but sends garbage between the real messages."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    nonce = bytes(range(32))
    await ws.send_json({"type": "challenge", "version": wire.PROTOCOL_VERSION, "nonce": nonce.hex()})
    hello = await ws.receive_json()
    VerifyKey(bytes.fromhex(hello["key"])).verify(
        wire.HELLO_CONTEXT + nonce, bytes.fromhex(hello["signature"])
    )
    await ws.send_json({"type": "welcome", "version": wire.PROTOCOL_VERSION, "key": hello["key"]})
    join = await ws.receive_json()
    me, other = hello["key"], "ab" * 32
    members = [{"key": me, "name": "me", "ready": False}, {"key": other, "name": "o"}]
    for garbage in [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"type": 5}),
        json.dumps({"type": "roster", "room": "r", "host": me, "members": "many"}),
        json.dumps({"type": "roster", "room": "r", "host": "zz", "members": []}),
        json.dumps({"type": "signal", "from": "not hex", "data": {}}),
        json.dumps({"type": "signal", "from": other, "data": "not an object"}),
        json.dumps({"type": "something_new"}),
    ]:
        await ws.send_str(garbage)
    await ws.send_json({"type": "joined", "room": join["room"], "host": me, "members": members})
    await ws.send_json({"type": "signal", "from": other, "room": "r", "data": {"kind": "x"}})
    async for _ in ws:
        pass
    return ws


async def test_signalling_client_skips_garbage() -> None:
    app = web.Application()
    app.router.add_get("/ws", garbage_rendezvous)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorder = SignalRecorder()
    client = SignallingClient(
        f"http://127.0.0.1:{runner.addresses[0][1]}",
        signing_key=SigningKey.generate(),
        name="me",
        game="demo",
        room="r",
        password=None,
        listener=recorder,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(client.run())
            async with asyncio.timeout(5):
                await recorder.heard.wait()
            task.cancel()
    finally:
        await runner.cleanup()
    assert [len(r.members) for r in recorder.rosters] == [2]
    assert recorder.signals == [(b"\xab" * 32, {"kind": "x"})]
    assert client.stats.malformed == 7


@pytest.mark.parametrize(
    ("game", "password", "code"),
    [("nosuchgame", None, "unknown_game"), ("demo", "wrong", "wrong_password")],
)
async def test_signalling_refusals_end_the_client(
    tmp_path: Path, game: str, password: str | None, code: str
) -> None:
    async with rendezvous(tmp_path) as server:
        owner = SignallingClient(
            server.url,
            signing_key=SigningKey.generate(),
            name="owner",
            game="demo",
            room="locked",
            password="right",
            listener=SignalRecorder(),
        )
        stranger = SignallingClient(
            server.url,
            signing_key=SigningKey.generate(),
            name="stranger",
            game=game,
            room="locked",
            password=password,
            listener=SignalRecorder(),
        )
        async with asyncio.TaskGroup() as tasks:
            owning = tasks.create_task(owner.run())
            async with asyncio.timeout(10):
                await owner.wait_joined()
                with pytest.raises(SignallingRefused) as refused:
                    await stranger.run()
            owning.cancel()
        assert refused.value.code == code


def mutate(sdp: str, rng: random.Random) -> str:
    lines = sdp.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(lines))
        match rng.randrange(4):
            case 0:
                del lines[at]
            case 1 if lines[at]:
                k = rng.randrange(len(lines[at]))
                lines[at] = lines[at][:k] + rng.choice("x:= 0/-") + lines[at][k + 1 :]
            case 2:
                lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)]
            case _:
                lines.insert(at, rng.choice(["a=", "m=", "a=fingerprint:", "m=application x"]))
    return "\r\n".join(lines)


async def test_mutated_offers_only_drop_their_link() -> None:
    template = RTCPeerConnection(LOOPBACK.configuration())
    template.createDataChannel("msxsync")
    await template.setLocalDescription(await template.createOffer())
    sdp = template.localDescription.sdp
    await template.close()
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    answerer, offerer = (a, b) if role_towards(a.key, b.key) is Role.ANSWERER else (b, a)
    rng = random.Random(2)
    answered = asyncio.Event()

    def swallow_answers(sender: bytes, to: bytes, data: dict[str, Any]) -> dict[str, Any] | None:
        if data.get("kind") == "answer":
            answered.set()
            return None
        return data

    signals.rewrite = swallow_answers

    async def attempt_over() -> None:
        """Until the answerer either answered this offer or dropped its link."""
        waits = [
            asyncio.ensure_future(answered.wait()),
            asyncio.ensure_future(answerer.mesh.wait_until(lambda: answerer.mesh.link(offerer.key) is None)),
        ]
        try:
            async with asyncio.timeout(5):
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async with running(a, b):
        answerer.mesh.set_roster([a.key, b.key])
        for link_id in range(1, 60):
            answered.clear()
            offer = {"kind": "offer", "link": link_id, "sdp": mutate(sdp, rng)}
            answerer.mesh.handle_signal(offerer.key, offer)
            await attempt_over()
        signals.rewrite = None
        offerer.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=15)
