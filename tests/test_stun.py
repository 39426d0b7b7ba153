"""The rendezvous's STUN responder: answers, refusals, rate limits (pure), and its UDP adapter on
loopback, asked by aioice itself."""

from __future__ import annotations

import asyncio
import socket

import aioice.ice
import pytest
from aioice import stun
from hypothesis import given
from hypothesis import strategies as st

from peer.mesh.webrtc import STUN_SOFTWARE, offering_host_addresses
from rendezvous.stun import StunResponder, serve_stun

SOURCE = ("203.0.113.7", 40000)


def binding(software: str | None = STUN_SOFTWARE, method: stun.Method = stun.Method.BINDING) -> bytes:
    request = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
    if software is not None:
        request.attributes["SOFTWARE"] = software
    return bytes(request)


def test_a_padded_binding_request_gets_the_public_address_back() -> None:
    responder = StunResponder()
    data = binding()
    answer = responder.datagram_received(data, SOURCE, 0.0)
    assert answer is not None and len(answer) <= len(data)
    message = stun.parse_message(answer)
    assert message.message_class == stun.Class.RESPONSE
    assert message.transaction_id == stun.parse_message(data).transaction_id
    assert message.attributes["XOR-MAPPED-ADDRESS"] == SOURCE
    assert responder.statistics()["answered"] == 1


def test_never_more_bytes_than_came_in() -> None:
    responder = StunResponder()
    assert responder.datagram_received(binding(software=None), SOURCE, 0.0) is None  # 20 bytes
    assert responder.stats.too_small == 1
    # IPv6 answers are larger (44 bytes): msxsync's padded request still fits.
    assert responder.datagram_received(binding(), ("2001:db8::1", 5), 0.0) is not None


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 19, b"GET / HTTP/1.1\r\n\r\n" * 3, binding()[:-1], binding() + b"\x00\x00\x00\x00"],
)
def test_garbage_is_dropped_and_counted(data: bytes) -> None:
    responder = StunResponder()
    assert responder.datagram_received(data, SOURCE, 0.0) is None
    assert responder.stats.malformed == 1 and responder.statistics()["dropped"] == 1


def test_only_binding_requests_are_answered() -> None:
    responder = StunResponder()
    allocate = binding(method=stun.Method.ALLOCATE)
    indication = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.INDICATION)
    indication.attributes["SOFTWARE"] = STUN_SOFTWARE
    for data in (allocate, bytes(indication)):
        assert responder.datagram_received(data, SOURCE, 0.0) is None
    assert responder.stats.not_binding_request == 2
    assert responder.datagram_received(b"\x00" * 600, SOURCE, 0.0) is None
    assert responder.stats.too_large == 1


def test_a_flood_from_one_address_is_rate_limited_and_others_still_served() -> None:
    responder = StunResponder(rate=10, burst=20)
    answered = sum(responder.datagram_received(binding(), SOURCE, 0.0) is not None for _ in range(1000))
    assert answered == 20 and responder.stats.rate_limited == 980
    assert responder.datagram_received(binding(), ("198.51.100.1", 1), 0.0) is not None
    # One second later the flooder has earned `rate` more answers, not more.
    answered = sum(responder.datagram_received(binding(), SOURCE, 1.0) is not None for _ in range(1000))
    assert answered == 10


def test_a_spoofed_flood_from_many_addresses_hits_the_global_limit_and_a_bounded_table() -> None:
    responder = StunResponder(global_rate=100, max_sources=50)
    answered = sum(
        responder.datagram_received(binding(), (f"10.0.{i // 250}.{i % 250}", 1), 0.0) is not None
        for i in range(1000)
    )
    assert answered == 100
    assert responder.statistics()["sources"] == 50


@given(st.binary(max_size=700))
def test_any_datagram_gets_an_answer_no_larger_or_nothing(data: bytes) -> None:
    answer = StunResponder().datagram_received(data, SOURCE, 0.0)
    assert answer is None or len(answer) <= len(data)


@given(st.binary(min_size=4, max_size=200))
def test_any_attributes_after_a_valid_header_never_crash(body: bytes) -> None:
    header = bytes(stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST))
    data = header[:2] + len(body).to_bytes(2, "big") + header[4:] + body
    answer = StunResponder().datagram_received(data, SOURCE, 0.0)
    assert answer is None or len(answer) <= len(data)


async def test_aioice_learns_its_address_from_the_server_on_loopback() -> None:
    responder = StunResponder()
    transport = await serve_stun(responder, "127.0.0.1", 0)
    try:
        port = transport.get_extra_info("sockname")[1]
        connection = aioice.ice.Connection(ice_controlling=True, stun_server=("127.0.0.1", port))
        with offering_host_addresses(("127.0.0.1",)):  # msxsync pads its STUN requests in here
            await asyncio.wait_for(connection.gather_candidates(), 10)
        kinds = {c.type for c in connection.local_candidates}
        await connection.close()
        assert "srflx" in kinds and responder.stats.answered >= 1
        # A bare request is refused, not amplified: the padded one sent after it is answered,
        # and loopback keeps their order, so by then the bare one was judged.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setblocking(False)
            probe.sendto(binding(software=None), ("127.0.0.1", port))
            probe.sendto(binding(), ("127.0.0.1", port))
            answer = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(probe, 100), 5)
        assert stun.parse_message(answer).message_class == stun.Class.RESPONSE
        assert responder.stats.too_small == 1
    finally:
        transport.close()
