"""What both ends of the rendezvous WebSocket agree on (PROTOCOL.md): one module, two importers.

The server's parser (`rendezvous.protocol`), the client's protocol object (`peer.core.room.signalling`)
and the LAN announcements (`peer.core.room.lan`) import their constants from here instead of keeping
copies that drift: the protocol version, the hello context, the limits on names, and the patterns
for keys, signatures, room names and standby URLs.

Patterns are matched whole with `fullmatch`: `re.match` with a final `$` also accepts a trailing
newline, and `bytes.fromhex` then skips it, so one key would have two spellings (issue 16).

Pure: imports only `re`, `json` and `rendezvous.names`; it must not import asyncio, aiohttp or
anything else of ours.
"""

from __future__ import annotations

import json
import re
from typing import TypeGuard

from rendezvous import names

# 2: the welcome carries `ice_servers`; 3: the relay (binary frames), issue 13; 4: TURN credentials
# only for a room's members, in `joined` and renewed by `ice_servers` messages (issue 29, F8)
PROTOCOL_VERSION = 4
HELLO_CONTEXT = b"msxsync-rendezvous-hello\x00"  # the client signs this, then the raw nonce
NONCE_SIZE = 32
MAX_NAME = 32  # player names: 1 to 32 visible characters (`rendezvous.names.visible`)
MAX_PASSWORD = 128
CHAT_LIMIT = 500
# The relay (version 3): a binary frame is a 32-byte key (the recipient, or on the way back the
# sender) and then the peers' own bytes, at most RELAY_MAX_PAYLOAD of them (a 64 KiB mesh message
# sealed for the relay, and room to spare).
RELAY_KEY_SIZE = 32
RELAY_MAX_PAYLOAD = 64 * 1024 + 64

KEY_PATTERN = re.compile(r"[0-9a-f]{64}")  # an Ed25519 public key, lower-case hex
SIGNATURE_PATTERN = re.compile(r"[0-9a-f]{128}")
NONCE_PATTERN = re.compile(r"[0-9a-f]{64}")  # NONCE_SIZE bytes
ROOM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,31}")
# Where a member would serve the rendezvous if it took over hosting: http(s)://HOST:PORT, nothing more.
STANDBY_PATTERN = re.compile(r"https?://(\[[0-9a-fA-F:.]{2,45}\]|[A-Za-z0-9.-]{1,63}):[0-9]{1,5}")

# ICE servers in the welcome (version 2): host names and IPv4 addresses only, as aiortc parses them.
MAX_ICE_SERVERS = 8
MAX_ICE_URLS = 4
MAX_ICE_TEXT = 256  # username, credential
ICE_HOST_PATTERN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*")
_ICE_PORT = r"(:(?P<port>[0-9]{1,5}))?"
STUN_URL_PATTERN = re.compile(r"stun:(?P<host>[^:?]+)" + _ICE_PORT)
TURN_URL_PATTERN = re.compile(r"turns?:(?P<host>[^:?]+)" + _ICE_PORT + r"(\?transport=(udp|tcp))?")


def is_key(text: object) -> TypeGuard[str]:
    """64 lower-case hex digits, nothing before or after."""
    return isinstance(text, str) and KEY_PATTERN.fullmatch(text) is not None


def is_signature(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and SIGNATURE_PATTERN.fullmatch(text) is not None


def is_nonce(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and NONCE_PATTERN.fullmatch(text) is not None


def is_valid_room_name(name: object) -> TypeGuard[str]:
    """1 to 32 characters: letters, digits, space, '_', '.', '+', '-', starting with a letter or digit."""
    return isinstance(name, str) and ROOM_PATTERN.fullmatch(name) is not None


def is_standby_url(text: object) -> TypeGuard[str]:
    return isinstance(text, str) and STANDBY_PATTERN.fullmatch(text) is not None


def is_ice_host(text: object) -> TypeGuard[str]:
    """A host name or IPv4 address fit for a stun:/turn: URL."""
    return isinstance(text, str) and ICE_HOST_PATTERN.fullmatch(text) is not None


def _ice_url(pattern: re.Pattern[str], text: object) -> bool:
    if not isinstance(text, str) or len(text) > MAX_ICE_TEXT:
        return False
    match = pattern.fullmatch(text)
    if match is None or not is_ice_host(match.group("host")):
        return False
    port = match.group("port")
    return port is None or 1 <= int(port) <= 65535


def is_stun_url(text: object) -> TypeGuard[str]:
    """stun:HOST[:PORT]"""
    return _ice_url(STUN_URL_PATTERN, text)


def is_turn_url(text: object) -> TypeGuard[str]:
    """turn:HOST[:PORT][?transport=udp|tcp] or turns:..."""
    return _ice_url(TURN_URL_PATTERN, text)


def is_player_name(name: object) -> TypeGuard[str]:
    """What the server lets through: a roster name (`is_roster_name`) with no invisible character
    (no bidi controls, zero-width characters or fillers) and something a reader can tell apart
    once shown (not `blank`, as "{}" or "$" would be: `rendezvous.names`)."""
    return is_roster_name(name) and names.visible(name) and not names.blank(name)


def is_roster_name(name: object) -> TypeGuard[str]:
    """What a client takes as a member's name in a roster: 1 to MAX_NAME printable characters, not
    padded with spaces (the server's rule before issue 30), so that one member an older server let
    in with a filler does not make every roster unreadable. A client shows and compares such a name
    as `rendezvous.names.shown` and `skeletons` make it."""
    return (
        isinstance(name, str) and 1 <= len(name) <= MAX_NAME and name.isprintable() and name == name.strip()
    )


def signed_hello_bytes(nonce: bytes) -> bytes:
    """What the client signs to answer a challenge: the fixed context, then the raw nonce."""
    return HELLO_CONTEXT + nonce


class FrameError(ValueError):
    """A text frame that is not a JSON object; the text is a sentence fit to send back."""


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def json_object(text: str) -> dict[str, object]:
    """A text frame as a JSON object, or `FrameError`. Never anything else: deep nesting makes
    `json.loads` raise RecursionError and a 5,000-digit number ValueError, both caught here.
    Python's NaN and Infinity extensions are refused: they are not JSON."""
    try:
        body = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise FrameError("The message is not valid JSON.") from None
    if not isinstance(body, dict):
        raise FrameError("The message must be a JSON object with a 'type' field.")
    return body
