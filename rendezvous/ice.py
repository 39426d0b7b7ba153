"""The ICE servers a rendezvous hands each player: its own STUN, and TURN for the members of a room.

Owns the `IceConfig` (the STUN port, the TURN URLs, the shared secret and the credential lifetime)
and turns it into the `ice_servers` list for one player:
- STUN at the host name the player used to reach us (its `Host` header, without the port), at our
  STUN port: whatever name or address works for the player's HTTP works for its STUN;
- TURN with short-lived credentials in coturn's shared-secret scheme (`use-auth-secret`,
  `static-auth-secret`; the "TURN REST API" of draft-uberti-behave-turn-rest): username =
  "EXPIRY:NAME" (unix time when it stops working, and a label), password =
  base64(HMAC-SHA1(secret, username)). coturn recomputes the password from its copy of the secret,
  so nothing is shared between the two servers but that secret.

Who gets TURN, and for how long (issue 29, F8): STUN is in every welcome, but TURN credentials only
in the `joined` answer, i.e. to members of a room, and then again in an `ice_servers` message
every `renew_every` seconds while the player stays a member: the credentials live about as long as
the membership, `DEFAULT_LIFETIME` (20 minutes) by default. They cannot be revoked one by one: coturn
recomputes the password from the secret, so a username works until its expiry whatever the
rendezvous thinks (only changing the secret ends them all). Hence the short lifetime: a kicked or
departed member keeps what it has until then and gets no renewal. An allocation made while the
credentials worked outlives them as long as its client refreshes it (coturn checks a username's
expiry when it authenticates a new allocation, and keeps the key it derived for the allocation's
later requests), so a game in progress is not cut off when its credentials age out.

The secret is held in a `TurnSecret`, whose repr hides it, and is read only from a file
(`read_secret`): it never appears in argv, logs, the status page or the API.

Pure: no sockets, no clock (`now`, wall-clock unix time, comes in). Imports only the standard
library and `rendezvous.wire`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rendezvous import wire

DEFAULT_LIFETIME = 20 * 60  # seconds a TURN credential works; members get new ones before then
MIN_LIFETIME = 60
MAX_LIFETIME = 7 * 24 * 3600
MAX_SECRET = 4096
MIN_SECRET = 16


class TurnSecret:
    """coturn's `static-auth-secret`; its repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not MIN_SECRET <= len(value) <= MAX_SECRET:
            raise ValueError(f"the TURN secret must be {MIN_SECRET} to {MAX_SECRET} bytes long")
        self._value = value

    def sign(self, username: str) -> str:
        digest = hmac.new(self._value, username.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode("ascii")

    def __repr__(self) -> str:
        return "TurnSecret(<hidden>)"


def read_secret(path: Path) -> TurnSecret:
    """The secret in `path` (surrounding whitespace removed), or ValueError saying what is wrong."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if info.st_size > MAX_SECRET + 2:
            raise ValueError(f"{path} is too large for a TURN secret (at most {MAX_SECRET} bytes)")
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TURN secret file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: put coturn's static-auth-secret in it") from None
    if "\n" in text or not text.isprintable():
        raise ValueError(f"{path} must hold the secret on one line, and nothing else")
    if len(text) < MIN_SECRET:
        raise ValueError(f"the TURN secret in {path} is too short: at least {MIN_SECRET} characters")
    return TurnSecret(text.encode())


def secret_file_warning(path: Path) -> str | None:
    """A sentence when others than the owner may read the secret file, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} can be read by other users; chmod 600 it"
    return None


def turn_credentials(secret: TurnSecret, now: float, lifetime: int, name: str) -> tuple[str, str]:
    """coturn shared-secret credentials valid from `now` (unix time) for `lifetime` seconds."""
    username = f"{int(now) + lifetime}:{name}"
    return username, secret.sign(username)


@dataclass(frozen=True)
class IceConfig:
    """What the rendezvous tells players about ICE servers."""

    stun_port: int | None = None  # None: no STUN of our own
    turn_urls: tuple[str, ...] = ()
    turn_secret: TurnSecret | None = field(default=None, repr=False)
    turn_lifetime: int = DEFAULT_LIFETIME
    turn_renew: float | None = None  # seconds between a member's credentials; None: 3/4 of the lifetime

    def __post_init__(self) -> None:
        if self.stun_port is not None and not 1 <= self.stun_port <= 65535:
            raise ValueError(f"the STUN port must be 1 to 65535, not {self.stun_port}")
        for url in self.turn_urls:
            if not wire.is_turn_url(url):
                raise ValueError(f"not a TURN URL (turn:HOST:PORT[?transport=udp|tcp]): {url!r}")
        if self.turn_urls and self.turn_secret is None:
            raise ValueError("TURN needs the shared secret (--turn-secret-file)")
        if self.turn_secret is not None and not self.turn_urls:
            raise ValueError("a TURN secret without a TURN URL (--turn) is of no use")
        if not MIN_LIFETIME <= self.turn_lifetime <= MAX_LIFETIME:
            raise ValueError(f"the TURN credential lifetime must be {MIN_LIFETIME} to {MAX_LIFETIME} s")
        if self.turn_renew is not None and not 0 < self.turn_renew < self.turn_lifetime:
            raise ValueError("TURN credentials must be renewed before they expire")

    @property
    def offers_turn(self) -> bool:
        return bool(self.turn_urls) and self.turn_secret is not None

    @property
    def renew_every(self) -> float:
        """Seconds between a member's credentials and the next ones: three quarters of the lifetime."""
        return self.turn_lifetime * 0.75 if self.turn_renew is None else self.turn_renew

    def servers_for(
        self, host_header: str | None, key: str, now: float, *, turn: bool = True
    ) -> list[dict[str, object]]:
        """The `ice_servers` for the player with `key`, who reached us as `host_header`: STUN, and
        with `turn` (a room's member whose address has not had its share) TURN credentials."""
        servers: list[dict[str, object]] = []
        host = stun_host(host_header)
        if self.stun_port is not None and host is not None:
            servers.append({"urls": [f"stun:{host}:{self.stun_port}"]})
        if turn and self.turn_urls and self.turn_secret is not None:
            username, password = turn_credentials(self.turn_secret, now, self.turn_lifetime, key[:16])
            servers.append({"urls": list(self.turn_urls), "username": username, "credential": password})
        return servers


def stun_host(host_header: str | None) -> str | None:
    """The host part of an HTTP `Host` header when it is a plain name or address, else None."""
    if not host_header:
        return None
    host = host_header.strip()
    if host.startswith("["):  # [IPv6]:port
        end = host.find("]")
        host = host[: end + 1] if end > 0 else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host if wire.is_ice_host(host) else None
