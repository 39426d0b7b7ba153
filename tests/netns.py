"""A small internet of network namespaces with real Linux NAT, for tests and benchmarks.

Built as `../shared/docs/internet.md` describes it, and torn down afterwards:

    public:   bridge `br0` holding the public host (PUBLIC, the rendezvous and coturn)
    router N: `wan` on the bridge (100.64.0.1N), `lan` towards its player (10.N.0.1), NAT out of
              `wan` (MASQUERADE: keeps ports, a "cone"; `--random-fully`: symmetric), and the
              firewall a home router has (nothing unsolicited comes in from `wan`)
    player N: 10.N.0.2, default route through its router

Traffic never leaves the namespaces the helper created. Counting where packets go uses rules
without a target in each router's FORWARD chain (`count_udp`), which tells a direct path (router
to router) from one through the public host.

Needs root, `ip netns` and iptables; `unavailable()` says why not, for a skip.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PUBLIC = "100.64.0.1"
_serial = itertools.count()


def unavailable() -> str | None:
    """Why the namespace internet cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (scripts/setup --test installs it)"
    probe = f"msxprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"'ip netns' is unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Player:
    number: int
    router: str  # namespace names
    host: str
    nat: str  # "cone" or "symmetric"

    @property
    def public_address(self) -> str:
        return f"100.64.0.{10 + self.number}"

    @property
    def private_address(self) -> str:
        return f"10.{self.number}.0.2"


class Internet:
    """The public namespace and its bridge; players are added with `add_player`."""

    def __init__(self) -> None:
        self.tag = f"msx{os.getpid() % 100000}n{next(_serial)}"
        self.public = f"{self.tag}pub"
        self.players: list[Player] = []
        self._namespaces: list[str] = []
        self._add_namespace(self.public)
        _run("ip", "-n", self.public, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.public, "addr", "add", f"{PUBLIC}/24", "dev", "br0")
        _run("ip", "-n", self.public, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def add_player(self, nat: str = "cone") -> Player:
        if nat not in ("cone", "symmetric"):
            raise ValueError(f"nat is 'cone' or 'symmetric', not {nat!r}")
        number = len(self.players) + 1
        player = Player(number, f"{self.tag}r{number}", f"{self.tag}p{number}", nat)
        router, host = player.router, player.host
        self._add_namespace(router)
        self._add_namespace(host)
        uplink = f"up{number}"  # the router's cable, as seen in the public namespace
        veth = ("type", "veth", "peer", "name")
        _run("ip", "-n", router, "link", "add", "wan", *veth, uplink, "netns", self.public)
        _run("ip", "-n", self.public, "link", "set", uplink, "master", "br0", "up")
        _run("ip", "-n", router, "addr", "add", f"{player.public_address}/24", "dev", "wan")
        _run("ip", "-n", router, "link", "set", "wan", "up")
        _run("ip", "-n", router, "link", "add", "lan", *veth, "eth0", "netns", host)
        _run("ip", "-n", router, "addr", "add", f"10.{number}.0.1/24", "dev", "lan")
        _run("ip", "-n", router, "link", "set", "lan", "up")
        _run("ip", "-n", host, "addr", "add", f"{player.private_address}/24", "dev", "eth0")
        _run("ip", "-n", host, "link", "set", "eth0", "up")
        _run("ip", "-n", host, "route", "add", "default", "via", f"10.{number}.0.1")
        _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        masquerade = ["-j", "MASQUERADE"] + (["--random-fully"] if nat == "symmetric" else [])
        self.iptables(router, "-t", "nat", "-A", "POSTROUTING", "-o", "wan", *masquerade)
        for chain in ("INPUT", "FORWARD"):
            self.iptables(
                router, "-A", chain, "-i", "wan", "-m", "conntrack",
                "!", "--ctstate", "ESTABLISHED,RELATED", "-j", "DROP",
            )  # fmt: skip
        self.players.append(player)
        return player

    def iptables(self, namespace: str, *rule: str) -> None:
        _run("ip", "netns", "exec", namespace, "iptables", "-w", *rule)

    def count_udp(self, player: Player, destination: str, port: int | None = None) -> None:
        """Start counting UDP packets `player`'s router forwards to `destination` (and `port`)."""
        rule = ["-o", "wan", "-d", destination, "-p", "udp"]
        if port is not None:
            rule += ["--dport", str(port)]
        self.iptables(player.router, "-I", "FORWARD", *rule)

    def counted(self, player: Player, destination: str, port: int | None = None) -> int:
        """Packets counted so far by the matching `count_udp` rule."""
        rules = _run("ip", "netns", "exec", player.router, "iptables", "-w", "-S", "FORWARD", "-v")
        for line in rules.splitlines():
            words = line.split()
            if "-j" in words or f"{destination}/32" not in words or "-c" not in words:
                continue
            if (port is None) == ("--dport" in words):
                continue
            if port is not None and words[words.index("--dport") + 1] != str(port):
                continue
            return int(words[words.index("-c") + 1])
        raise LookupError(f"no counting rule for {destination} port {port} in {player.router}")

    def reset_counts(self, player: Player) -> None:
        """Zero the packet counters of `player`'s router (its FORWARD chain)."""
        self.iptables(player.router, "-Z", "FORWARD")

    def command(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside `namespace`."""
        return ["ip", "netns", "exec", namespace, *argv]

    def close(self) -> None:
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()
