"""LAN hosting without a server: the hosting peer dies, the earliest remaining joiner takes over.

Real peers (`python -m peer.cli`) with real headless openMSX running the bundled demo, on
loopback. What each peer's replica holds is read from its durable state (SQLite), which is written
as soon as a change is merged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peer_processes import START_TCL, WRITER_TCL, Peer, stop_all, wait_for
from tests.ports import unused_port

pytestmark = pytest.mark.openmsx

ITEM = 0xE011
LOCAL = ["--room", "lanroom", "--ice-address", "127.0.0.1"]


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    stop_all(started)


def test_host_killed_earliest_joiner_takes_over_and_newcomers_still_join(tmp_path, peers):
    go = tmp_path / "go"
    # Each port is picked right before its peer starts (a peer cannot host on port 0): the one a
    # joiner is given is where it hosts if it takes over.
    alice_port = unused_port()
    alice = Peer(tmp_path / "alice", "alice", [*LOCAL, "--host", "--port", str(alice_port)], START_TCL)
    peers.append(alice)
    wait_for(lambda: "joined room" in alice.text(), "alice to host", peers)
    url = f"http://127.0.0.1:{alice_port}"
    bob_port = unused_port()
    bob = Peer(
        tmp_path / "bob",
        "bob",
        [*LOCAL, "--rendezvous", url, "--port", str(bob_port)],
        WRITER_TCL.replace("GO", str(go)),
    )
    peers.append(bob)
    wait_for(lambda: "joined room" in bob.text(), "bob to join", peers)
    carol = Peer(
        tmp_path / "carol", "carol", [*LOCAL, "--rendezvous", url, "--port", str(unused_port())], START_TCL
    )
    peers.append(carol)
    wait_for(lambda: all("sharing with the room" in p.text() for p in peers), "all three to arm", peers)

    alice.kill()
    wait_for(lambda: "bob now hosts the room" in carol.text(), "carol to follow bob", peers)
    assert "you now host the room" in bob.text()
    go.touch()
    wait_for(lambda: carol.stored(ITEM) == 7, "bob's write to reach carol", peers)

    dave = Peer(
        tmp_path / "dave",
        "dave",
        [*LOCAL, "--rendezvous", f"http://127.0.0.1:{bob_port}", "--port", str(unused_port())],
        START_TCL,
    )
    peers.append(dave)
    wait_for(lambda: dave.stored(ITEM) == 7, "newcomer dave to get the room's bytes through bob", peers)
