"""What a LAN host announces over DNS-SD, how a browser checks it, and which host a player joins.

This module owns the msxsync service record: the TXT keys and their limits, the instance name, the
rendezvous URL built from an announced address and port, and the choice among discovered hosts. It is
pure (no sockets, asyncio or zeroconf): `peer.lan` does the multicast and feeds what it heard here.

Everything heard on the network is untrusted: `parse_announcement` either returns a fully checked
`DiscoveredHost` or raises `AnnouncementError` with a sentence for the log. An announcement cannot
prove who sent it; the host key it carries is a claim the rendezvous connection must still verify.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from games.definition import is_valid_game_name
from rendezvous.wire import MAX_NAME, is_key, is_player_name, is_valid_room_name

SERVICE_TYPE = "_msxsync._tcp.local."
PROTOCOL_VERSION = 1
MAX_PLAYER_NAME = MAX_NAME  # the rendezvous' limit for player names
MAX_INSTANCE_NAME = 63  # DNS-SD: an instance name is one DNS label
MAX_TXT_KEYS = 32  # more than this is not an msxsync host, it is noise
_UNSAFE_IN_INSTANCE = re.compile(r"[^A-Za-z0-9 _-]+")


class AnnouncementError(ValueError):
    """An announcement (ours or one heard on the network) breaks the rules; the text says which."""


# --- the record a host announces -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a hosting peer tells the LAN about itself. Cannot be built invalid."""

    player: str
    game: str
    room: str | None
    key: str  # the host's Ed25519 public key, 64 lower-case hex digits
    password: bool = False  # the room asks for one (never the password itself)

    def __post_init__(self) -> None:
        check_player_name(self.player)
        if not is_valid_game_name(self.game):
            raise AnnouncementError(f"game {_show(self.game)} is not a game name")
        if self.room is not None and not is_valid_room_name(self.room):
            raise AnnouncementError(
                f"room {_show(self.room)} is not 1 to 32 letters, digits, spaces or '_.+-'"
            )
        if not is_key(self.key):
            raise AnnouncementError("key is not an Ed25519 public key as 64 lower-case hex digits")


def check_player_name(name: str) -> None:
    if not is_player_name(name):
        raise AnnouncementError(f"player name {_show(name)} is not 1 to {MAX_PLAYER_NAME} visible characters")


def txt_records(announcement: Announcement) -> dict[str, str]:
    """The TXT key/value pairs of the service (each well under DNS-SD's 255 bytes per pair)."""
    records = {
        "v": str(PROTOCOL_VERSION),
        "game": announcement.game,
        "name": announcement.player,
        "key": announcement.key,
    }
    if announcement.room is not None:
        records["room"] = announcement.room
    if announcement.password:
        records["pw"] = "1"
    return records


def instance_name(announcement: Announcement) -> str:
    """A readable DNS-SD instance name: 'Alice - demo - friday - 1a2b3c4d', at most 63 bytes.

    Only letters, digits, space, '_' and '-' survive, so the name is a safe single label whatever
    the player typed; the key prefix keeps two players of the same name apart. Browsers never read
    anything from it: the TXT record is what counts."""
    tail = [_sanitise(announcement.game)]
    if announcement.room is not None:
        tail.append(_sanitise(announcement.room))
    tail.append(announcement.key[:8])
    suffix = " - " + " - ".join(part for part in tail if part)
    player = _sanitise(announcement.player) or "msxsync"
    space = MAX_INSTANCE_NAME - len(suffix)
    if space < 8:  # a long game and room name: keep the player, drop the decoration
        suffix = " - " + announcement.key[:8]
        space = MAX_INSTANCE_NAME - len(suffix)
    return player[:space].rstrip() + suffix


def _sanitise(text: str) -> str:
    """Letters lose their accents ('Zoë' -> 'Zoe'); anything else unsafe becomes a space."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join(_UNSAFE_IN_INSTANCE.sub(" ", ascii_text).split())


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise AnnouncementError(f"port {port} is not between 1 and 65535")
    return port


def check_addresses(addresses: Iterable[str]) -> list[str]:
    """Addresses a host may announce: valid IPs, neither unspecified nor multicast; deduplicated."""
    checked: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise AnnouncementError(f"{_show(text)} is not an IP address") from None
        if address.is_unspecified or address.is_multicast:
            raise AnnouncementError(f"{address} cannot be announced (unspecified or multicast)")
        if str(address) not in checked:
            checked.append(str(address))
    return checked


# --- what a browser makes of what it heard -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveredHost:
    """A host heard on the LAN, fully checked. `urls` are in order of preference (IPv4 first)."""

    player: str
    game: str
    room: str | None
    key: str
    urls: tuple[str, ...]
    password: bool = False

    @property
    def url(self) -> str:
        return self.urls[0]

    def describe(self) -> str:
        room = f"room {self.room}" if self.room is not None else "quick match"
        if self.password:
            room += ", with a password"
        return f"{self.player} hosts {self.game} ({room}) at {self.url}"


def parse_announcement(
    properties: Mapping[bytes, bytes | None], addresses: Sequence[str], port: int | None
) -> DiscoveredHost:
    """Check a resolved service (TXT pairs as zeroconf decodes them, its addresses and port)."""
    if len(properties) > MAX_TXT_KEYS:
        raise AnnouncementError(f"{len(properties)} TXT keys (at most {MAX_TXT_KEYS})")
    fields = _txt_fields(properties)
    version = fields.get("v")
    if version != str(PROTOCOL_VERSION):
        raise AnnouncementError(
            f"protocol version {_show(version)} (this peer speaks version {PROTOCOL_VERSION})"
        )
    announcement = Announcement(
        player=_required(fields, "name"),
        game=_required(fields, "game"),
        room=fields.get("room"),
        key=_required(fields, "key"),
        password=fields.get("pw") == "1",
    )
    if port is None:
        raise AnnouncementError("no port")
    urls = rendezvous_urls(addresses, check_port(port))
    return DiscoveredHost(
        announcement.player,
        announcement.game,
        announcement.room,
        announcement.key,
        urls,
        announcement.password,
    )


def _txt_fields(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """Keys are case-insensitive and the first occurrence wins (RFC 6763 6.4); values must be UTF-8."""
    fields: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        try:
            key = raw_key.decode("ascii").lower()
        except UnicodeDecodeError:
            continue  # not one of ours; unknown keys are ignored
        if key in fields or key not in ("v", "game", "name", "room", "key", "pw"):
            continue
        if raw_value is None:
            raise AnnouncementError(f"TXT key {key!r} has no value")
        try:
            fields[key] = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise AnnouncementError(f"TXT key {key!r} is not UTF-8") from None
    return fields


def _required(fields: Mapping[str, str], key: str) -> str:
    if key not in fields:
        raise AnnouncementError(f"TXT key {key!r} is missing")
    return fields[key]


def rendezvous_urls(addresses: Iterable[str], port: int) -> tuple[str, ...]:
    """`http://` URLs for the announced addresses a browser can use; IPv4 before IPv6.

    Loopback (it would point at the browser's own machine), unspecified, multicast and IPv6
    link-local addresses (unusable in a URL without the browser's interface scope) are left out."""
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            continue
        if address.version == 6 and address.is_link_local:
            continue
        if address not in usable:
            usable.append(address)
    if not usable:
        raise AnnouncementError("no usable address announced")
    usable.sort(key=lambda address: address.version)  # stable: announcement order within a family
    return tuple(
        f"http://{address}:{port}" if address.version == 4 else f"http://[{address}]:{port}"
        for address in usable
    )


def join_hint(addresses: Iterable[str], port: int, listen: str) -> str:
    """How others join a rendezvous this machine hosts, listening on LISTEN (an address).

    Only addresses the server answers on and other players can use are offered: none but
    loopback when it listens on loopback, IPv4 ones when it listens on every IPv4 interface
    (0.0.0.0 does not answer on IPv6); IPv6 addresses go in brackets."""
    if ipaddress.ip_address(listen).is_loopback:
        return (
            f"others on this machine join with --rendezvous http://127.0.0.1:{port} "
            "(this room is closed to the network)"
        )
    if ipaddress.ip_address(listen).version == 4:
        addresses = [a for a in addresses if ":" not in a]
    try:
        urls = rendezvous_urls(addresses, port)[:3]
    except AnnouncementError:
        urls = (f"http://<this machine's address>:{port}",)
    return "others join with --lan or --rendezvous " + " or ".join(urls)


def deduplicate(hosts: Iterable[DiscoveredHost]) -> list[DiscoveredHost]:
    """One entry per distinct announcement (the same host is heard once per interface and name),
    in a stable order for listing. Announcements that differ in anything stay apart, so a copy of
    someone's key with another address is shown next to the original, never merged into it."""
    unique = set(hosts)
    return sorted(unique, key=lambda h: (h.game, h.room or "", h.player, h.key, h.urls))


# --- choosing the host to join --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chosen:
    host: DiscoveredHost


@dataclass(frozen=True, slots=True)
class NoHost:
    """Nothing matches; `others` are the hosts of other games or rooms, for the message."""

    game: str
    room: str | None
    others: tuple[DiscoveredHost, ...]

    def describe(self) -> str:
        wanted = self.game if self.room is None else f"{self.game} in room {self.room}"
        return f"no host of {wanted} found on this network" + "".join(
            f"\n  (also heard: {host.describe()})" for host in self.others
        )


@dataclass(frozen=True, slots=True)
class Several:
    """More than one host fits; the player must say which (with --room or --rendezvous)."""

    hosts: tuple[DiscoveredHost, ...]

    def describe(self) -> str:
        lines = [f"{len(self.hosts)} hosts fit; choose one with --room or --rendezvous URL:"]
        lines.extend(f"  {host.describe()}" for host in self.hosts)
        return "\n".join(lines)


Choice = Chosen | NoHost | Several


def choose(hosts: Iterable[DiscoveredHost], *, game: str, room: str | None = None) -> Choice:
    """The host to join: of this game; in `room` if one is given; else the only one there is."""
    everyone = deduplicate(hosts)
    matching = [h for h in everyone if h.game == game and (room is None or h.room == room)]
    if not matching:
        return NoHost(game, room, tuple(everyone))
    if len(matching) == 1:
        return Chosen(matching[0])
    return Several(tuple(matching))


def _show(value: object, limit: int = 40) -> str:
    """A quoted, escaped, shortened form of an untrusted value for messages and logs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
