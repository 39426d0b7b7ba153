"""Wire format of the rendezvous WebSocket: parsing client messages, the hello proof, rate limits.

This module owns what a client may send and how it is checked. It is pure (no asyncio, aiohttp,
sockets, clock or randomness: the nonce and `now` come in as arguments). `parse_message` turns a
text frame into one of the frozen request dataclasses below or raises `ProtocolError` with the
code and sentence the client gets back (codes are listed in PROTOCOL.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from games.definition import is_valid_game_name
from rendezvous import wire
from rendezvous.fairness import text_problem

# The constants both ends share live in `rendezvous.wire`; re-exported for the server's modules.
from rendezvous.wire import CHAT_LIMIT as CHAT_LIMIT
from rendezvous.wire import HELLO_CONTEXT as HELLO_CONTEXT
from rendezvous.wire import MAX_NAME as MAX_NAME
from rendezvous.wire import MAX_PASSWORD as MAX_PASSWORD
from rendezvous.wire import NONCE_SIZE as NONCE_SIZE
from rendezvous.wire import PROTOCOL_VERSION as PROTOCOL_VERSION
from rendezvous.wire import is_valid_room_name as is_valid_room_name
from rendezvous.wire import signed_hello_bytes as signed_hello_bytes


class ProtocolError(Exception):
    """The client sent something wrong; `fatal` errors end the connection."""

    def __init__(self, code: str, message: str, *, fatal: bool = False, request: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.request = request


def error_message(
    code: str,
    message: str,
    *,
    fatal: bool = False,
    request: str | None = None,
    retry_after: float | None = None,
) -> dict[str, object]:
    body: dict[str, object] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if request is not None:
        body["request"] = request
    if retry_after is not None:
        body["retry_after"] = round(retry_after, 1)
    return body


# --- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    name: str
    key: str
    signature: str


@dataclass(frozen=True, slots=True)
class Join:
    game: str
    room: str | None
    password: str | None
    capacity: int | None
    standby: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Kick:
    key: str


@dataclass(frozen=True, slots=True)
class Ready:
    ready: bool


@dataclass(frozen=True, slots=True)
class Signal:
    to: str
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class Chat:
    text: str


Request = Hello | Join | Leave | Kick | Ready | Signal | Chat


def kind_of(request: Request) -> str:
    """The wire `type` of a parsed request (each class is named after its type)."""
    return type(request).__name__.lower()


class _Fields:
    """Typed access to one message's fields; every failure is a `bad_message` naming the field."""

    def __init__(self, body: dict[str, object], kind: str) -> None:
        self.body = body
        self.kind = kind

    def fail(self, field: str, expected: str) -> ProtocolError:
        return ProtocolError(
            "bad_message",
            f"Field {field!r} of {self.kind!r} must be {expected}.",
            request=self.kind,
        )

    def text(self, field: str) -> str:
        value = self.body.get(field)
        if not isinstance(value, str):
            raise self.fail(field, "a string")
        return value

    def optional_text(self, field: str) -> str | None:
        value = self.body.get(field)
        if value is not None and not isinstance(value, str):
            raise self.fail(field, "a string or null")
        return value

    def integer(self, field: str) -> int:
        value = self.optional_integer(field)
        if value is None:
            raise self.fail(field, "an integer")
        return value

    def optional_integer(self, field: str) -> int | None:
        value = self.body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise self.fail(field, "an integer or null")
        return value

    def boolean(self, field: str) -> bool:
        value = self.body.get(field)
        if not isinstance(value, bool):
            raise self.fail(field, "true or false")
        return value

    def key(self, field: str) -> str:
        value = self.text(field).lower()
        if not wire.is_key(value):
            raise self.fail(field, "an Ed25519 public key as 64 hex digits")
        return value

    def json_object(self, field: str) -> dict[str, object]:
        value = self.body.get(field)
        if not isinstance(value, dict):
            raise self.fail(field, "a JSON object")
        return value


def decode_frame(text: str) -> dict[str, object]:
    """A text frame as a JSON object, or `bad_json`."""
    try:
        body = wire.json_object(text)
    except wire.FrameError as exc:
        raise ProtocolError("bad_json", str(exc)) from None
    try:  # a JSON escape can spell a lone surrogate, which no UTF-8 encoder takes
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        kind = body.get("type")
        request = kind[:40] if isinstance(kind, str) and text_problem(kind) is None else None
        raise ProtocolError(
            "bad_message", "Every text must be valid Unicode (no lone surrogates).", request=request
        ) from None
    return body


def parse_message(text: str) -> Request:
    """Decode and validate one client frame."""
    body = decode_frame(text)
    kind = body.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "The message needs a 'type' string.")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError("unknown_type", f"Unknown message type {kind[:40]!r}.", request=kind[:40])
    return parser(_Fields(body, kind))


def _hello(f: _Fields) -> Hello:
    version = f.integer("version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "version_mismatch",
            f"This server speaks protocol version {PROTOCOL_VERSION}; the client speaks version {version}.",
            fatal=True,
            request="hello",
        )
    signature = f.text("signature").lower()
    if not wire.is_signature(signature):
        raise f.fail("signature", "an Ed25519 signature as 128 hex digits")
    return Hello(version, player_name(f), f.key("key"), signature)


def player_name(f: _Fields) -> str:
    name = f.text("name").strip()
    if not wire.is_player_name(name):
        raise f.fail("name", f"1 to {MAX_NAME} printable characters, none of them invisible")
    return name


def _join(f: _Fields) -> Join:
    game = f.text("game")
    if not is_valid_game_name(game):
        raise f.fail("game", "a game name (letters, digits, '_', '.', '+', '-')")
    room = f.optional_text("room")
    if room is not None and not is_valid_room_name(room):
        raise f.fail("room", "null or 1 to 32 characters: letters, digits, space, '_', '.', '+', '-'")
    password = f.optional_text("password")
    if password is not None and not 1 <= len(password) <= MAX_PASSWORD:
        raise f.fail("password", f"null or 1 to {MAX_PASSWORD} characters")
    if password is not None and (problem := text_problem(password)) is not None:
        raise f.fail("password", problem)
    standby = f.optional_text("standby")
    if standby is not None and not wire.is_standby_url(standby):
        raise f.fail("standby", "null or a URL of the form http://HOST:PORT")
    return Join(game, room, password, f.optional_integer("capacity"), standby)


def _signal(f: _Fields) -> Signal:
    return Signal(f.key("to"), f.json_object("data"))


def _chat(f: _Fields) -> Chat:
    text = f.text("text")
    if not 1 <= len(text) <= CHAT_LIMIT:
        raise f.fail("text", f"1 to {CHAT_LIMIT} characters")
    if (problem := text_problem(text)) is not None:
        raise f.fail("text", problem)
    return Chat(text)


_PARSERS: dict[str, Callable[[_Fields], Request]] = {
    "hello": _hello,
    "join": _join,
    "leave": lambda f: Leave(),
    "kick": lambda f: Kick(f.key("key")),
    "ready": lambda f: Ready(f.boolean("ready")),
    "signal": _signal,
    "chat": _chat,
}


# --- the hello proof ----------------------------------------------------------------------


def challenge_message(nonce: bytes) -> dict[str, object]:
    return {"type": "challenge", "version": PROTOCOL_VERSION, "nonce": nonce.hex()}


def verify_hello(hello: Hello, nonce: bytes) -> None:
    """Raise the fatal `bad_signature` unless `hello` is signed by its key over `nonce`."""
    try:
        VerifyKey(bytes.fromhex(hello.key)).verify(signed_hello_bytes(nonce), bytes.fromhex(hello.signature))
    except (BadSignatureError, ValueError):
        # ValueError/nacl errors: a key that is not a valid curve point cannot have signed it.
        raise ProtocolError(
            "bad_signature",
            "The hello signature does not match the key and challenge.",
            fatal=True,
            request="hello",
        ) from None


# --- rate limit ---------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per connection: `rate` messages/s sustained, `burst` at once.

    `admit(now)` says what to do with one message: "ok", "limited" (drop it and tell the client,
    once per limited spell), "drop" (drop silently) or "flood" (the client kept sending a whole
    burst while limited: disconnect).
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now
        self.strikes = 0

    def admit(self, now: float) -> str:
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.strikes = 0
            return "ok"
        return self.strike()

    def strike(self) -> str:
        """One message refused (by this bucket or a shared one): "limited", "drop" or "flood"."""
        self.strikes += 1
        if self.strikes > self.burst:
            return "flood"
        return "limited" if self.strikes == 1 else "drop"
