"""LAN play end to end: a host announced in one network namespace, `--lan` in another finds it,
joins and syncs over the veth between them (the only network these processes can see)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peer_processes import START_TCL, WRITER_TCL, Peer, stop_all, wait_for
from tests.test_lan import IP, namespaces  # noqa: F401 - the fixture

pytestmark = pytest.mark.openmsx


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    stop_all(started)


def test_lan_finds_the_host_and_plays_across_the_network(tmp_path, namespaces, peers):  # noqa: F811
    host_ns, guest_ns = namespaces
    go = tmp_path / "go"
    alice = Peer(
        tmp_path / "alice",
        "alice",
        ["--host"],
        WRITER_TCL.replace("GO", str(go)),
        prefix=[IP, "netns", "exec", host_ns],
    )
    peers.append(alice)
    wait_for(lambda: "announcing" in alice.text(), "alice to announce her game", peers)
    bob = Peer(tmp_path / "bob", "bob", ["--lan"], START_TCL, prefix=[IP, "netns", "exec", guest_ns])
    peers.append(bob)
    wait_for(
        lambda: "alice joined" in bob.text() and "bob joined" in alice.text(),
        "bob to find and join alice",
        peers,
    )
    assert "found alice" in bob.text() and "http://10.213.0.1:4567" in bob.text()
    wait_for(lambda: all("sharing with the room" in p.text() for p in peers), "both to arm", peers)
    go.touch()
    wait_for(lambda: bob.stored(0xE011) == 7, "alice's write to reach bob over the LAN", peers)
