"""LAN discovery: the pure record rules and host choice, and a real mDNS round across two namespaces.

The namespace test builds its own little network (two namespaces joined by a veth pair, addresses
only inside them), so no multicast ever leaves the namespaces it creates. It needs root and
`ip netns`; where the machine forbids those it is skipped and says why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.room.lan import (
    MAX_INSTANCE_NAME,
    Announcement,
    AnnouncementError,
    Chosen,
    DiscoveredHost,
    NoHost,
    Several,
    choose,
    deduplicate,
    instance_name,
    parse_announcement,
    rendezvous_urls,
    txt_records,
)
from peer.lan import LanError, announce, discover, local_addresses
from rendezvous.wire import is_player_name
from tests.lan_helper import HOSTILE

KEY = "0123456789abcdef" * 4
OTHER_KEY = "fedcba9876543210" * 4
ROOT = Path(__file__).resolve().parent.parent


def txt(**fields: str | None) -> dict[bytes, bytes | None]:
    base: dict[str, str | None] = {"v": "1", "game": "demo", "name": "Alice", "key": KEY}
    base.update(fields)
    return {k.encode(): (None if v is None else v.encode()) for k, v in base.items()}


def host(player="Alice", game="demo", room=None, key=KEY, url="http://10.0.0.1:4567") -> DiscoveredHost:
    return DiscoveredHost(player, game, room, key, (url,))


# --- TXT records --------------------------------------------------------------------------------


def test_announcement_round_trips_through_txt_records():
    announcement = Announcement("Alice Ü", "galious", "friday", KEY)
    properties = {k.encode(): v.encode() for k, v in txt_records(announcement).items()}
    found = parse_announcement(properties, ["192.168.1.20"], 4567)
    assert found == DiscoveredHost("Alice Ü", "galious", "friday", KEY, ("http://192.168.1.20:4567",))
    assert found.url == "http://192.168.1.20:4567"


def test_a_password_room_says_so_and_never_the_password():
    announcement = Announcement("Alice", "demo", "home", KEY, password=True)
    records = txt_records(announcement)
    assert records["pw"] == "1" and "password" not in " ".join(records.values())
    found = parse_announcement({k.encode(): v.encode() for k, v in records.items()}, ["10.0.0.1"], 4567)
    assert found.password
    assert found.describe() == "Alice hosts demo (room home, with a password) at http://10.0.0.1:4567"
    assert not parse_announcement(txt(), ["10.0.0.1"], 4567).password  # older hosts: no such key


def test_room_is_optional():
    assert parse_announcement(txt(), ["10.0.0.1"], 4567).room is None


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        (txt(v="2"), "protocol version '2'"),
        (txt(v=None), "'v' has no value"),
        ({b"game": b"demo", b"name": b"A", b"key": KEY.encode()}, "protocol version None"),
        (txt(game="../../etc/passwd"), "not a game name"),
        (txt(game=None), "'game' has no value"),
        (txt(name=""), "player name"),
        (txt(name="x" * 33), "player name"),
        (txt(name="Mal\x1b[31mlory"), "player name"),
        (txt(name=" Alice"), "player name"),
        (txt(key="ab" * 31), "key"),
        (txt(key=KEY.upper()), "key"),
        (txt(room="x" * 33), "room"),
        (txt(room="a/b"), "room"),
        (txt(room=""), "room"),
        ({**txt(), b"name": b"\xff\xfe"}, "not UTF-8"),
        ({k: v for k, v in txt().items() if k != b"key"}, "'key' is missing"),
        ({**txt(), **{f"x{i}".encode(): b"" for i in range(40)}}, "TXT keys"),
    ],
)
def test_malformed_txt_is_refused_with_a_reason(properties, reason):
    with pytest.raises(AnnouncementError) as caught:
        parse_announcement(properties, ["10.0.0.1"], 4567)
    assert reason in str(caught.value)


def test_txt_keys_are_case_insensitive_first_wins_and_unknown_ignored():
    properties: dict[bytes, bytes | None] = {
        b"V": b"1",
        b"v": b"9",
        b"GAME": b"demo",
        b"name": b"Bob",
        b"key": KEY.encode(),
        b"colour": b"\xff",
        b"\xff": None,
    }
    assert parse_announcement(properties, ["10.0.0.1"], 1).player == "Bob"


def test_port_and_addresses_are_checked():
    with pytest.raises(AnnouncementError, match="no port"):
        parse_announcement(txt(), ["10.0.0.1"], None)
    with pytest.raises(AnnouncementError, match="port 0"):
        parse_announcement(txt(), ["10.0.0.1"], 0)
    with pytest.raises(AnnouncementError, match="no usable address"):
        parse_announcement(txt(), ["127.0.0.1", "::1", "0.0.0.0", "224.0.0.251", "fe80::1%2"], 4567)


def test_urls_prefer_ipv4_and_bracket_ipv6():
    urls = rendezvous_urls(["2001:db8::5", "garbage", "10.0.0.7", "10.0.0.7", "fe80::1"], 80)
    assert urls == ("http://10.0.0.7:80", "http://[2001:db8::5]:80")


@given(
    st.dictionaries(
        st.binary(max_size=12),
        st.none() | st.binary(max_size=80),
        max_size=8,
    ),
    st.lists(st.text(max_size=20), max_size=3),
    st.none() | st.integers(-5, 70000),
)
def test_any_announcement_parses_or_is_refused(properties, addresses, port):
    """Whatever arrives, the parser returns a checked host or raises AnnouncementError, nothing else."""
    try:
        found = parse_announcement(properties, addresses, port)
    except AnnouncementError:
        return
    assert found.urls
    Announcement(found.player, found.game, found.room, found.key)  # re-validates


@given(
    st.dictionaries(
        st.sampled_from([b"v", b"game", b"name", b"room", b"key"]),
        st.none() | st.binary(max_size=70),
        max_size=5,
    )
)
def test_fuzzed_msxsync_keys_never_crash(fields):
    with contextlib.suppress(AnnouncementError):
        parse_announcement({**txt(), **fields}, ["10.1.2.3"], 4567)


# --- our own announcement -------------------------------------------------------------------------


def test_own_announcement_cannot_be_built_invalid():
    with pytest.raises(AnnouncementError):
        Announcement("Alice", "demo", "no/slash", KEY)
    with pytest.raises(AnnouncementError):
        Announcement("", "demo", None, KEY)


@given(
    st.text(min_size=1, max_size=32).filter(is_player_name),  # what the rendezvous takes as a name
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", fullmatch=True).filter(lambda s: ".." not in s),
    st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,31}", fullmatch=True),
)
def test_instance_name_is_one_safe_label(player, game, room):
    name = instance_name(Announcement(player, game, room, KEY))
    assert 1 <= len(name.encode()) <= MAX_INSTANCE_NAME
    assert all(c.isascii() and (c.isalnum() or c in " _-") for c in name)
    assert name.endswith(KEY[:8])


def test_instance_name_reads_well():
    assert instance_name(Announcement("Alice", "demo", "friday", KEY)) == "Alice - demo - friday - 01234567"
    assert instance_name(Announcement("Zoë <3", "demo", None, KEY)) == "Zoe 3 - demo - 01234567"


# --- choosing ---------------------------------------------------------------------------------------


def test_choose_the_only_host_of_the_game():
    alice = host()
    assert choose([alice, host(game="galious", key=OTHER_KEY)], game="demo") == Chosen(alice)


def test_choose_by_room():
    friday = host(room="friday")
    saturday = host(player="Bob", room="saturday", key=OTHER_KEY, url="http://10.0.0.2:4567")
    assert choose([friday, saturday], game="demo", room="saturday") == Chosen(saturday)
    several = choose([friday, saturday], game="demo")
    assert several == Several((friday, saturday))
    assert isinstance(several, Several)
    assert several.describe() == (
        "2 hosts fit; choose one with --room or --rendezvous URL:\n"
        "  Alice hosts demo (room friday) at http://10.0.0.1:4567\n"
        "  Bob hosts demo (room saturday) at http://10.0.0.2:4567"
    )


def test_choose_reports_nothing_with_what_else_there_is():
    galious = host(game="galious")
    result = choose([galious], game="demo", room="friday")
    assert result == NoHost("demo", "friday", (galious,))
    assert isinstance(result, NoHost)
    assert result.describe() == (
        "no host of demo in room friday found on this network\n"
        "  (also heard: Alice hosts galious (quick match) at http://10.0.0.1:4567)"
    )
    assert choose([], game="demo") == NoHost("demo", None, ())


def test_same_announcement_heard_twice_is_one_host():
    alice = host()
    assert choose([alice, replace(alice)], game="demo") == Chosen(alice)
    assert deduplicate([alice, alice]) == [alice]


def test_copied_key_at_another_address_is_not_merged():
    alice = host()
    impostor = host(url="http://10.0.0.66:4567")
    result = choose([alice, impostor], game="demo")
    assert isinstance(result, Several)
    assert set(result.hosts) == {alice, impostor}


@given(
    st.lists(
        st.builds(
            host,
            st.sampled_from(["A", "B"]),
            st.sampled_from(["demo", "g2"]),
            st.sampled_from([None, "r1", "r2"]),
        ),
        max_size=6,
    ),
    st.sampled_from([None, "r1", "r2"]),
)
def test_choice_is_independent_of_order(hosts, room):
    assert choose(hosts, game="demo", room=room) == choose(list(reversed(hosts)), game="demo", room=room)


def test_pure_module_imports_no_io():
    program = (
        "import sys, peer.core.room.lan\n"
        "print(sorted(m for m in ['asyncio', 'socket', 'zeroconf'] if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_local_addresses_leave_out_loopback():
    for text in local_addresses():
        address = ipaddress.ip_address(text)
        assert not address.is_loopback
        assert not (address.version == 6 and address.is_link_local)


# --- the adapter's own checks (no traffic) ---------------------------------------------------------


async def test_bad_arguments_are_refused_before_any_traffic():
    announcement = Announcement("Alice", "demo", None, KEY)
    with pytest.raises(LanError, match="port 70000"):
        async with announce(announcement, port=70000, addresses=["10.0.0.1"]):
            pass
    with pytest.raises(LanError, match="not an IP address"):
        async with announce(announcement, port=4567, addresses=["evil.example"]):
            pass
    with pytest.raises(LanError, match="multicast"):
        async with announce(announcement, port=4567, addresses=["224.0.0.251"]):
            pass
    with pytest.raises(LanError, match="timeout"):
        await discover(timeout=0)
    with pytest.raises(LanError, match="interfaces"):
        await discover(timeout=1, interfaces=["not-an-address"])
    with pytest.raises(LanError, match="empty"):
        await discover(timeout=1, interfaces=[])


# --- a real announcement across two network namespaces ----------------------------------------------

IP = "/usr/sbin/ip"
HOST_ADDRESS = "10.213.0.1"
BROWSER_ADDRESS = "10.213.0.2"
WAIT = 15.0  # seconds any one step may take before the test fails


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces joined by a veth pair: host 10.213.0.1/24, browser 10.213.0.2/24.

    The veth pair is created inside the first namespace and its peer end moved straight into the
    second, so nothing is added to the machine's own network; deleting the namespaces removes all."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which(IP) is None:
        pytest.skip(f"{IP} (iproute2) is not installed")
    tag = uuid.uuid4().hex[:8]
    host_ns, browser_ns = f"msxsync-lan-h-{tag}", f"msxsync-lan-b-{tag}"
    created: list[str] = []
    try:
        for ns in (host_ns, browser_ns):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as error:
                pytest.skip(f"this machine forbids network namespaces: {error.stderr.decode().strip()}")
            created.append(ns)
        _ip(*f"-n {host_ns} link add veth0 type veth peer name veth1 netns {browser_ns}".split())
        for ns, device, address in ((host_ns, "veth0", HOST_ADDRESS), (browser_ns, "veth1", BROWSER_ADDRESS)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", device, "up")
            # mDNS goes to 224.0.0.251; the route keeps it on the veth whatever the socket options.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", device)
        yield host_ns, browser_ns
    finally:
        for ns in created:
            subprocess.run([IP, "netns", "delete", ns], capture_output=True, timeout=10)


def _helper(ns: str, *args: str) -> list[str]:
    return [IP, "netns", "exec", ns, sys.executable, "-m", "tests.lan_helper", *args]


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


def test_browser_in_one_namespace_finds_host_announced_in_another(namespaces):
    """The announcer runs with a real host's defaults (every interface and address of its namespace,
    that is lo and the veth); the browser is pinned to its veth address."""
    host_ns, browser_ns = namespaces
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    announcer = subprocess.Popen(
        _helper(
            host_ns,
            *["announce", "--port", "4567", "--name", "Alice", "--game", "demo"],
            *["--room", "friday", "--key", KEY, "--hostile"],
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        line = _read_line(announcer, WAIT)
        assert line.startswith("ready Alice - demo - friday - 01234567"), line
        announced = time.monotonic()
        browse = subprocess.run(
            _helper(browser_ns, "discover", "--interface", BROWSER_ADDRESS, "--timeout", "3"),
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=WAIT,
        )
        assert browse.returncode == 0, browse.stderr
        found = json.loads(browse.stdout)
        assert found == [
            {
                "player": "Alice",
                "game": "demo",
                "room": "friday",
                "key": KEY,
                "urls": [f"http://{HOST_ADDRESS}:4567"],
            }
        ]
        # Each hostile service was heard and skipped with a log line, not a crash.
        skipped = [
            line for line in browse.stderr.splitlines() if "ignoring LAN announcement 'hostile" in line
        ]
        assert len(skipped) == len(HOSTILE), browse.stderr
    finally:
        assert announcer.stdin is not None
        announcer.stdin.close()  # the announcer unregisters and exits when its stdin closes
        try:
            announcer.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            announcer.kill()
            announcer.wait(timeout=WAIT)
    assert announcer.returncode == 0, announcer.stderr.read() if announcer.stderr else ""
    print(f"announced after {announced - started:.1f} s, whole round {time.monotonic() - started:.1f} s")


def test_unusable_interface_is_a_clear_error(namespaces):
    _, browser_ns = namespaces
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for mode in ("discover", "announce"):
        result = subprocess.run(
            _helper(browser_ns, mode, "--interface", "10.213.9.9", "--timeout", "1"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=WAIT,
        )
        assert result.returncode == 3, result.stderr
        assert "LanError: cannot use multicast DNS on this network" in result.stderr
