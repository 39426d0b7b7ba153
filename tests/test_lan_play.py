"""LAN play end to end: a host announced in one network namespace, `--lan` in another finds it,
joins and syncs over the veth between them (the only network these processes can see)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peer_processes import Peer, stop_all, wait_for, writer_tcl
from tests.test_lan import IP, namespaces  # noqa: F401 - the fixture

pytestmark = pytest.mark.openmsx


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    stop_all(started)


@pytest.mark.parametrize(
    ("host_args", "guest_args"),
    [
        ([], []),  # quick match
        (["--room", "home"], []),  # the host's named room: --lan joins it, not a quick match
        (["--room", "home", "--password", "s3cret"], ["--password", "s3cret"]),
    ],
    ids=["quick-match", "named-room", "password-room"],
)
def test_lan_finds_the_host_and_plays_across_the_network(
    tmp_path,
    namespaces,  # noqa: F811
    peers,
    host_args,
    guest_args,
):
    host_ns, guest_ns = namespaces
    go = tmp_path / "go"
    alice = Peer(
        tmp_path / "alice",
        "alice",
        ["--host", *host_args],
        writer_tcl(go, 0xE011, 7),
        prefix=[IP, "netns", "exec", host_ns],
    )
    peers.append(alice)
    wait_for(lambda: "announcing" in alice.text(), "alice to announce her game", peers)
    bob = Peer(
        tmp_path / "bob",
        "bob",
        ["--lan", *guest_args],
        writer_tcl(go, 0xE012, 9),
        prefix=[IP, "netns", "exec", guest_ns],
    )
    peers.append(bob)
    wait_for(
        lambda: "alice joined" in bob.text() and "bob joined" in alice.text(),
        "bob to find and join alice",
        peers,
    )
    assert "found alice" in bob.text() and "http://10.213.0.1:4567" in bob.text()
    if "--room" in host_args:
        assert "joining alice hosts demo (room home" in bob.text()
    wait_for(lambda: all("sharing with the room" in p.text() for p in peers), "both to arm", peers)
    go.touch()  # both write: each one's write reaches the other over the LAN
    wait_for(lambda: bob.stored(0xE011) == 7, "alice's write to reach bob over the LAN", peers)
    wait_for(lambda: alice.stored(0xE012) == 9, "bob's write to reach alice over the LAN", peers)


def test_lan_without_the_password_of_the_hosts_room_says_what_to_pass(
    tmp_path,
    namespaces,  # noqa: F811
    peers,
):
    host_ns, guest_ns = namespaces
    alice = Peer(
        tmp_path / "alice",
        "alice",
        ["--host", "--room", "home", "--password", "s3cret"],
        writer_tcl(tmp_path / "never", 0xE011, 7),
        prefix=[IP, "netns", "exec", host_ns],
    )
    peers.append(alice)
    wait_for(lambda: "announcing" in alice.text(), "alice to announce her game", peers)
    bob = Peer(tmp_path / "bob", "bob", ["--lan"], "", prefix=[IP, "netns", "exec", guest_ns])
    peers.append(bob)
    assert bob.process.wait(timeout=30) != 0
    assert "alice's room home has a password: pass --password." in bob.text()
