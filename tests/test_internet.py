"""Internet play across real NAT: players behind routers built from network namespaces (with
iptables NAT and a home router's firewall) meet through a rendezvous on a "public" host, with
coturn beside it where a test needs TURN (issue 13). Where the packets go is counted in the
routers themselves.

Needs root, `ip netns`, iptables and coturn: elsewhere every test here is skipped, saying why.
Each test builds its own small internet and takes a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.internet_support import (
    RENDEZVOUS_PORT,
    TURN_PORT,
    converged,
    coturn_missing,
    programs,
    start_coturn,
    start_nodes,
    start_rendezvous,
)
from tests.netns import PUBLIC, Internet, Player

# (the `net` fixture skips, saying why, where the namespace internet cannot be built)
pytestmark = [pytest.mark.netns]
LINK_TIMEOUT = 20.0  # the mesh's connect timeout is 15 s: a link must come up on its first dial


def needs_coturn() -> None:
    reason = coturn_missing()
    if reason is not None:
        pytest.skip(reason)


async def sync_two(net: Internet, a: Player, b: Player, room: str, path: str = "direct") -> tuple[float, int]:
    """Two nodes behind `a` and `b` join, link (each saying the link is PATH, as a player's
    status line would), write and converge: seconds to the link, and the STUN packets the
    routers sent to the rendezvous until then."""
    async with programs() as started:
        began = time.monotonic()
        nodes = await start_nodes(net, (a, b), room, started)
        for node in nodes:
            await node.send(cmd="wait_admitted", count=1)
        for node in nodes:
            admitted = await node.expect("admitted_all", LINK_TIMEOUT)
            assert admitted["paths"] == [path], admitted
        linked = time.monotonic() - began
        stun = sum(net.counted(p, PUBLIC, RENDEZVOUS_PORT) for p in (a, b))
        # Only what flows once linked tells the path: ICE checks try every pair first.
        for player in (a, b):
            net.reset_counts(player)
        for slot, node in enumerate(nodes):
            await node.send(cmd="write", frames=20, seed=slot)
        for node in nodes:
            await node.expect("written", LINK_TIMEOUT)
        await converged(nodes, LINK_TIMEOUT)
        return linked, stun


def count_paths(net: Internet, a: Player, b: Player) -> None:
    for player, other in ((a, b), (b, a)):
        net.count_udp(player, other.public_address)
        net.count_udp(player, PUBLIC, TURN_PORT)
        net.count_udp(player, PUBLIC, RENDEZVOUS_PORT)  # STUN
        net.count_udp(player, PUBLIC)  # anything to the public host: coturn's relay ports too


async def sync_through_turn(
    net: Internet, tmp_path: Path, nats: tuple[str, str], room: str
) -> tuple[Player, Player]:
    """Players behind NATs `nats`, counted (`count_paths`), sync through coturn, which the
    rendezvous hands out; prints how long the link took (skipped without coturn)."""
    needs_coturn()
    a, b = net.add_player(nats[0]), net.add_player(nats[1])
    count_paths(net, a, b)
    async with programs() as started:
        started.append(await start_coturn(net, tmp_path))
        started.append(await start_rendezvous(net, tmp_path, turn=True))
        linked, _ = await sync_two(net, a, b, room, path="via TURN")
    print(f"{nats[0]}+{nats[1]} via TURN: linked in {linked:.2f} s")
    return a, b


async def test_home_routers_sync_directly_with_the_rendezvous_defaults(net: Internet, tmp_path: Path) -> None:
    # The first case: a rendezvous with its defaults and players who pass nothing but
    # --rendezvous. Its STUN tells each its public address; the game flows router to router.
    a, b = net.add_player("cone"), net.add_player("cone")
    count_paths(net, a, b)
    async with programs() as started:
        started.append(await start_rendezvous(net, tmp_path))
        linked, stun = await sync_two(net, a, b, "cone")
    print(f"cone+cone, rendezvous defaults: linked in {linked:.2f} s")
    assert stun > 0  # the rendezvous's own STUN, at its HTTP port number
    assert net.counted(a, b.public_address) > 0 and net.counted(b, a.public_address) > 0
    assert net.counted(a, PUBLIC, TURN_PORT) == 0 and net.counted(b, PUBLIC, TURN_PORT) == 0


async def test_symmetric_nats_sync_through_turn(net: Internet, tmp_path: Path) -> None:
    # Hole punching cannot work here; coturn, handed out by the rendezvous, relays.
    a, b = await sync_through_turn(net, tmp_path, ("symmetric", "symmetric"), "symmetric")
    for player, other in ((a, b), (b, a)):
        # Through coturn: each side either through its own allocation (to port 3478) or straight
        # to the other's relayed address (coturn's relay ports), never router to router.
        assert net.counted(player, PUBLIC) > 0
        assert net.counted(player, other.public_address) == 0


async def test_cone_and_symmetric_sync(net: Internet, tmp_path: Path) -> None:
    await sync_through_turn(net, tmp_path, ("cone", "symmetric"), "mixed")
