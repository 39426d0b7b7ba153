"""The rendezvous's STUN server (RFC 5389 Binding): a pure responder and its thin UDP adapter.

Players behind home routers learn their public address from it, which is all hole punching needs
(issue 13). It listens on UDP at the HTTP port number by default (one firewall rule covers both).

`StunResponder.datagram_received(data, addr, now)` returns the bytes to send back, or None. It
answers only what deserves an answer, and counts everything else in `statistics()`. What costs
little comes first, so that a flood is refused before it costs a parse (issue 29: forged sources
spent the global budget, and honest first tries were answered 28 % of the time):
- the 20-byte header is checked by hand (`binding_header_problem`: the magic cookie, a length
  that matches the datagram, the Binding request type), and the answer's size against the
  request's; then the buckets; only a request that passed them all is parsed, by aioice's kept
  STUN codec (`aioice.stun`), not a parser of ours;
- only Binding *requests* are answered (indications, responses and other methods are dropped);
- **never with more bytes than came in**: an answer (XOR-MAPPED-ADDRESS) is 32 bytes for IPv4 and
  44 for IPv6, so a request must be at least as large. A bare 20-byte request is dropped
  (`too_small`), which makes the server useless for reflection attacks; msxsync's own requests
  carry a SOFTWARE attribute that makes them large enough (`peer.mesh.webrtc`);
- each source address has a token bucket (`rate` per second, bursts of `burst`), and all sources
  together a global one, so a flood from one address, or a spoofed flood from many, costs a
  bounded number of answers. The table of sources is bounded too (oldest forgotten first).
  Given `welcomed` (does this address hold a welcomed WebSocket of the rendezvous?), a share
  of the global budget (`reserved_share`) is kept for those addresses: a spoofed flood cannot
  forge a source that holds a TCP connection, so players in the lobby keep being answered.

The responder does no I/O (no sockets, no clock: `now` comes in); only `serve_stun` and its
protocol class, the adapter, touch asyncio. It is not in the pure-import list only because
aioice's codec module comes with the rest of aioice.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from aioice import stun

log = logging.getLogger("msxsync.rendezvous.stun")

MAX_REQUEST = 548  # RFC 5389's safe UDP size; a Binding request has no business being larger
RATE = 10.0  # answers per second to one source address
BURST = 20
GLOBAL_RATE = 2000.0  # answers per second in all
MAX_SOURCES = 10_000
RESERVED_SHARE = 0.5  # of the global budget, for addresses that hold a welcomed WebSocket
MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI")  # type, length, magic cookie (the 12-byte transaction id follows)
BINDING_REQUEST = 0x0001
ANSWER_SIZE = {4: 32, 6: 44}  # a success answer: header + XOR-MAPPED-ADDRESS for IPv4, IPv6


@dataclass
class StunStatistics:
    answered: int = 0
    malformed: int = 0  # not STUN, or a STUN message aioice's codec refuses
    not_binding_request: int = 0
    too_small: int = 0  # the answer would be larger than the request: never amplify
    too_large: int = 0
    rate_limited: int = 0

    @property
    def dropped(self) -> int:
        return self.malformed + self.not_binding_request + self.too_small + self.too_large + self.rate_limited


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.updated = tokens, now

    def take(self, rate: float, burst: float, now: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.updated) * rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def binding_response(request: stun.Message, addr: tuple[str, int]) -> bytes:
    """The success answer to a Binding request from `addr`: XOR-MAPPED-ADDRESS, nothing else."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
    return bytes(response)


def binding_header_problem(data: bytes) -> str | None:
    """Why `data` is not a Binding request by its header alone (RFC 5389 6: the top two bits
    zero, the magic cookie, a length that is the rest of the datagram and a multiple of 4), as a
    `StunStatistics` field name, or None. Costs one unpack: run before any parse."""
    if len(data) < 20:
        return "malformed"
    kind, length, cookie = HEADER.unpack_from(data)
    if kind & 0xC000 or cookie != MAGIC_COOKIE or length != len(data) - 20 or length % 4:
        return "malformed"
    if kind != BINDING_REQUEST:
        return "not_binding_request"
    return None


def parse_request(data: bytes) -> stun.Message | None:
    """A STUN message as aioice's codec reads it, or None for anything it refuses."""
    try:
        return stun.parse_message(data)
    except (ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None  # aioice raises ValueError for most defects; the others come from its unpackers


class StunResponder:
    """Answers STUN Binding requests, rate limited, never amplifying (see the module docstring)."""

    def __init__(
        self,
        *,
        rate: float = RATE,
        burst: int = BURST,
        global_rate: float = GLOBAL_RATE,
        max_sources: int = MAX_SOURCES,
        welcomed: Callable[[str], bool] | None = None,
        reserved_share: float = RESERVED_SHARE,
        now: float = 0.0,
    ) -> None:
        if rate <= 0 or burst < 1 or global_rate <= 0 or max_sources < 1:
            raise ValueError("rate and global_rate must be positive, burst and max_sources at least 1")
        if not 0 <= reserved_share < 1:
            raise ValueError("reserved_share must be at least 0 and below 1")
        self.rate, self.burst, self.max_sources = rate, float(burst), max_sources
        self.welcomed = welcomed
        self.stats = StunStatistics()
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        reserved = global_rate * reserved_share if welcomed is not None else 0.0
        self.open_rate, self.reserved_rate = global_rate - reserved, reserved
        self._open = _Bucket(self.open_rate, now)  # for anyone
        self._reserved = _Bucket(reserved, now)  # only for addresses that hold a welcomed WebSocket

    def statistics(self) -> dict[str, int]:
        return {**asdict(self.stats), "dropped": self.stats.dropped, "sources": len(self._sources)}

    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> bytes | None:
        if len(data) > MAX_REQUEST:
            self.stats.too_large += 1
            return None
        problem = binding_header_problem(data)
        if problem is not None:
            setattr(self.stats, problem, getattr(self.stats, problem) + 1)
            return None
        if len(data) < ANSWER_SIZE[6 if ":" in addr[0] else 4]:
            self.stats.too_small += 1
            return None
        if not self._admit(addr[0], now):
            self.stats.rate_limited += 1
            return None
        request = parse_request(data)
        if request is None:
            self.stats.malformed += 1
            return None
        answer = binding_response(request, addr)
        if len(answer) > len(data):  # cannot happen after the size check; never amplify anyway
            self.stats.too_small += 1
            return None
        self.stats.answered += 1
        return answer

    def _admit(self, source: str, now: float) -> bool:
        bucket = self._sources.get(source)
        if bucket is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)  # forget the source heard from longest ago
            bucket = self._sources[source] = _Bucket(self.burst, now)
        else:
            self._sources.move_to_end(source)
        if not bucket.take(self.rate, self.burst, now):
            return False
        if self._open.take(self.open_rate, self.open_rate, now):
            return True
        welcomed = self.welcomed is not None and self.reserved_rate > 0 and self.welcomed(source)
        return welcomed and self._reserved.take(self.reserved_rate, self.reserved_rate, now)


# ---- the UDP adapter ---------------------------------------------------------------------------


class _StunProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: StunResponder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        answer = self.responder.datagram_received(data, (addr[0], addr[1]), now)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("STUN socket error (ignored): %s", exc)  # ICMP errors from earlier answers


async def serve_stun(responder: StunResponder, host: str, port: int) -> asyncio.DatagramTransport:
    """Listen for STUN on UDP (host, port); close the returned transport to stop."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _StunProtocol(responder), local_addr=(host, port)
    )
    return transport
