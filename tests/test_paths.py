"""Players see each link's path: the pure rule, and the words on the status line and in `peers`."""

import pytest

from peer.console import PeerLine, Status, format_peers, format_status
from peer.core.mesh.paths import Path, classify


@pytest.mark.parametrize(
    ("local", "remote", "path"),
    [
        ("host", "host", Path.DIRECT),
        ("srflx", "prflx", Path.DIRECT),
        ("host", "srflx", Path.DIRECT),
        ("relay", "srflx", Path.TURN),
        ("host", "relay", Path.TURN),
        ("relay", "relay", Path.TURN),
    ],
)
def test_a_relay_candidate_on_either_side_means_turn(local: str, remote: str, path: Path) -> None:
    assert classify(local, remote) is path


def test_unknown_candidate_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown ICE candidate type"):
        classify("host", "carrier-pigeon")


def status(*peers: PeerLine) -> Status:
    return Status("demo", "home", "a server", True, (), peers)


def test_the_status_line_names_a_relayed_path_and_the_peers_table_every_path() -> None:
    bob = PeerLine("bob", True, 0.012, None, "direct")
    carol = PeerLine("carol", True, 0.048, 3.0, "via TURN")
    dave = PeerLine("dave", False, None)
    line = format_status(status(bob, carol, dave))
    assert "bob 12 ms, carol via TURN 48 ms, dave (connecting)" in line
    table = format_peers((bob, carol, dave))
    assert table[0].split() == ["player", "path", "round", "trip", "last", "change"]
    assert table[1].split()[:3] == ["bob", "direct", "12"]
    assert table[2].split()[:4] == ["carol", "via", "TURN", "48"]
    assert table[3].split()[:2] == ["dave", "connecting"]
