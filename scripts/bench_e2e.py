#!/usr/bin/env python3
"""End-to-end latency benchmark: msxsync peers against the floor, side by side in one run.

In the sender, the test cartridge writes one shared byte (E021) at known times, told to by Tcl
(scripts/bench_e2e/sender.tcl; 10 writes a second, values 1, 2, ...), and a watchpoint logs the
wall clock of each write: the emulated CPU writes, as a game does. Every
receiver has a write watchpoint on that byte (scripts/bench_e2e/receiver.tcl) logging the wall
clock at which the byte lands in its emulated RAM. Latency = receive time - send time, per value
per receiver (one machine, one clock). Receivers run at `set speed 103` so their frames drift
through every phase of the sender's (see docs/openmsx.md, "Measuring latency between two
emulators").

Measured in the same run, in interleaved rounds (so that load from elsewhere on the machine
falls on every kind alike), samples pooled per kind:
  * floor: two headless openMSX joined by the thinnest relay: the sender's watchpoint prints the
    byte on stderr (scripts/bench_e2e/floor_tap.tcl), this process reads the line and writes the
    byte into the receiver through its stdin control (`debug write memory`); no network, no
    crypto;
  * msxsync with 2 and 4 peers: `python3 -m peer.cli --headless --ice-address 127.0.0.1` each,
    the first hosting the rendezvous (and sending), on a games folder made here with the test
    cartridge and a `bench.regions` sharing E020-E02F (no armed-when). In the sender, a trace on
    the link's report setting (scripts/bench_e2e/msxsync_tap.tcl) also time stamps when the
    write leaves openMSX, which splits the latency into detection and the rest.

The timed writes start only once every emulator runs the cartridge (past its boot-time RAM
clear, scripts/bench_e2e/boot.tcl) and every receiver has seen one of the sender's warm-up
writes (so every peer is connected and armed). Also reported: CPU per openMSX and per peer
process during the timed writes, and the machine's load average (on a shared machine, other
work shows in msxsync's figures more than in the floor's: it runs twice the processes).
Goal (issue 7): msxsync p50 <= 1.5x the floor's, p99 <= 2x. `--baseline DIR` adds, in the same
interleaved rounds, the peers of another source tree (a `git worktree` of an older commit): its
figures and msxsync's ratio to them say whether a change made msxsync slower. Prints human lines,
then one final JSON line. Only loopback traffic; every process started here is stopped on exit,
also on errors, Ctrl-C and SIGTERM. `--quick` (one round, 5 writes, 2 peers) is the smoke test's mode.
`--openmsx PROGRAM`, repeated, measures several openMSX versions in the same interleaved rounds:
each gets its own floor (with the renderer msxsync's headless peers use on that version: SDL on
18, none from 20) and its own peers, and its figures end in @VERSION (e.g. msxsync 2p@21).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peer.core.emulator.openmsx_versions import Features, UnsupportedOpenMSX, features_for, parse_version  # noqa: E402
from tests.ports import unused_port  # noqa: E402  (the host is told its port: it cannot take 0)

TCL = Path(__file__).resolve().parent / "bench_e2e"
CARTRIDGE = ROOT / "tests" / "cartridge" / "testcart.rom"
MACHINE = "C-BIOS_MSX2+"
# The test cartridge copies ARGUMENT to ADDRESS in the frame after COMMAND is set to 3, and
# writes nothing else in E020-E02F (the shared region) unless told.
ADDRESS, COMMAND, ARGUMENT = 0xE021, 0xE100, 0xE101
REGION = (0xE020, 0xE02F)
BOOTED = (0xE001, 0x42)  # the test cartridge writes 42h there every frame once it runs
WARM_VALUES = (250, 251)
RECEIVER_SPEED = 103
GOAL_P50, GOAL_P99 = 1.5, 2.0
SETTLE = 1.0  # seconds between "everyone saw a warm-up" and the go file (let the mesh settle)
HEADLESS_ENV = {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}


class BenchError(Exception):
    """The benchmark could not run (a process died, nobody connected in time)."""


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A process started here, in its own process group so that its children go with it."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise BenchError(
                f"{self.name} exited with code {self.process.returncode}; its log ends:\n{self.tail()}"
            )


@dataclass
class Children:
    """Every process of one phase; `stop` ends them all (politely, then by force)."""

    all: list[Child] = field(default_factory=list)

    async def start(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> Child:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=kwargs.pop("stdout", out), stderr=kwargs.pop("stderr", out),
                start_new_session=True, **kwargs,
            )  # fmt: skip
        child = Child(name, process, log)
        self.all.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.all:
            child.check_alive()

    def cpu_seconds(self) -> list[dict[str, float]]:
        return [cpu_seconds(child.process.pid) for child in self.all]

    async def stop(self, grace: float = 5.0) -> None:
        live = [c for c in self.all if c.process.returncode is None]
        for child in live:
            _signal_group(child.process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(c.process.wait() for c in live))
        for child in self.all:
            # Also whatever the child started (openMSX under a peer) if the child left it behind.
            _signal_group(child.process.pid, signal.SIGKILL)
        await asyncio.gather(*(c.process.wait() for c in self.all))
        self.all.clear()


def _signal_group(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds used so far by PID and its direct children, by program name ("openmsx",
    "python3"); an ended process counts as nothing."""
    used: dict[str, float] = {}
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for each in [pid, *map(int, children)]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{each}/stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks = int(fields[11]) + int(fields[12])  # utime + stime
                kind = "openmsx" if name.startswith("openmsx") else "python"
                used[kind] = used.get(kind, 0.0) + ticks / os.sysconf("SC_CLK_TCK")
    return used


@dataclass(frozen=True)
class Build:
    """One openMSX program measured (`--openmsx`), and what its version offers."""

    program: str
    features: Features

    @property
    def label(self) -> str:
        return str(self.features.version.major)


def find_build(program: str) -> Build:
    """PROGRAM's version (`openmsx -v`), which picks the floor's headless renderer too."""
    try:
        done = subprocess.run([program, "-v"], capture_output=True, text=True, timeout=20, check=False)
        if done.returncode != 0:
            raise BenchError(f"cannot use openMSX {program!r}: {done.stderr.strip()[:200]}")
        return Build(program, features_for(parse_version(done.stdout)))
    except (OSError, subprocess.TimeoutExpired, UnsupportedOpenMSX) as exc:
        raise BenchError(f"cannot use openMSX {program!r}: {exc}") from None


def openmsx_argv(program: str, scripts: list[Path]) -> list[str]:
    argv = [program, "-machine", MACHINE, "-control", "stdio", "-cart", str(CARTRIDGE)]
    for script in scripts:
        argv += ["-script", str(script)]
    return argv


# ---- Tcl parameters and logs ----------------------------------------------------------------


def tcl_quote(text: str) -> str:
    """A Tcl word that is exactly TEXT (our own temp paths; refuse anything odd)."""
    if any(ch in text for ch in '{}\\"$[]\n'):
        raise BenchError(f"unusable path for Tcl: {text!r}")
    return "{" + text + "}"


def write_params(path: Path, **values: str | int | float) -> Path:
    lines = [f"set ::bench_{key} {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Paths:
    """One phase's files: the go file, the send log, one receive log per receiver."""

    folder: Path

    @classmethod
    def make(cls, folder: Path) -> Paths:
        folder.mkdir()
        return cls(folder)

    @property
    def go(self) -> Path:
        return self.folder / "go"

    @property
    def sent(self) -> Path:
        return self.folder / "sent.log"

    @property
    def detected(self) -> Path:
        return self.folder / "detected.log"

    def received(self, index: int) -> Path:
        return self.folder / f"received-{index}.log"

    def booted(self, emulator: int) -> Path:
        return self.folder / f"booted-{emulator}"

    def params(self, emulator: int, received: Path, speed: int, count: int, interval: float) -> Path:
        """The Tcl variables of one emulator's scripts (Tcl runs `-script` files in order)."""
        return write_params(
            self.folder / f"params-{emulator}.tcl",
            address=ADDRESS,
            command=COMMAND,
            argument=ARGUMENT,
            boot_address=BOOTED[0],
            boot_value=BOOTED[1],
            booted_path=tcl_quote(str(self.booted(emulator))),
            recv_path=tcl_quote(str(received)),
            send_path=tcl_quote(str(self.sent)),
            go_path=tcl_quote(str(self.go)),
            detect_path=tcl_quote(str(self.detected)),
            count=count,
            interval=interval,
            speed=speed,
        )


def read_pairs(path: Path) -> list[tuple[int, int]]:
    """The "VALUE MICROSECONDS" lines of a log written by the Tcl (a last partial line is skipped)."""
    pairs = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0].isdigit() and words[1].isdigit():
                pairs.append((int(words[0]), int(words[1])))
    return pairs


def go_time(path: Path) -> int:
    """When the sender began its timed writes (its "go MICROSECONDS" line); 0 if it did not."""
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "go" and words[1].isdigit():
                return int(words[1])
    return 0


def send_done(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().endswith("done\n")
    return False


async def wait_for(condition: Any, children: Children) -> None:
    """Poll CONDITION (files written by openMSX) until it holds; fail early if a process died."""
    while not condition():
        children.check_alive()
        await asyncio.sleep(0.05)


async def measure(
    paths: Paths, receivers: int, count: int, interval: float, children: Children
) -> dict[str, list[float]]:
    """Warm-up until every emulator booted the cartridge and every receiver saw the sender, then
    the timed writes until the sender is done. The sender is emulator 0, receiver i emulator i+1.
    Returns the CPU used during the timed writes: % of one core per process, by program."""

    def all_warm() -> bool:
        booted = all(paths.booted(i).exists() for i in range(receivers + 1))
        return booted and all(
            any(value in WARM_VALUES for value, _ in read_pairs(paths.received(i))) for i in range(receivers)
        )

    try:
        async with asyncio.timeout(90):
            await wait_for(all_warm, children)
    except TimeoutError:
        raise BenchError("not every receiver saw the sender's warm-up writes within 90 s") from None
    await asyncio.sleep(SETTLE)
    paths.go.touch()
    before, started = children.cpu_seconds(), time.monotonic()
    try:
        async with asyncio.timeout(count * interval + 30):
            await wait_for(lambda: send_done(paths.sent), children)
    except TimeoutError:
        raise BenchError("the sender did not finish its writes") from None
    after, elapsed = children.cpu_seconds(), time.monotonic() - started
    await asyncio.sleep(max(1.0, 5 * interval))  # the last write's arrivals
    percent: dict[str, list[float]] = {}  # program -> % of a core, one entry per emulator or peer
    for was, now in zip(before, after, strict=True):
        for kind, seconds in now.items():
            percent.setdefault(kind, []).append(100 * (seconds - was.get(kind, 0.0)) / elapsed)
    return percent


# ---- results --------------------------------------------------------------------------------


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def timed(log: list[tuple[int, int]], go: int, count: int) -> list[tuple[int, int]]:
    """The timed values (1..count) of a log, from the sender's go on: earlier sightings of the
    same numbers are someone else's writes (C-BIOS writes E021 at boot), not these values."""
    return [(value, at) for value, at in log if 1 <= value <= count and at >= go]


def arrival_ms(sent_log: list[tuple[int, int]], seen_log: list[tuple[int, int]], count: int) -> list[float]:
    """Per sent value: first time it was seen at or after its send, minus the send, in ms, sorted."""
    sent = dict(sent_log)
    arrivals: dict[int, int] = {}
    for value, at in seen_log:
        if value in sent and value not in arrivals and at >= sent[value]:
            arrivals[value] = at
    return sorted((arrivals[v] - sent[v]) / 1000 for v in arrivals)


def ms(samples: list[float], fraction: float) -> float | None:
    return round(percentile(sorted(samples), fraction), 2) if samples else None


@dataclass
class Measured:
    """Latency samples of one kind (floor, msxsync with N peers), pooled over rounds."""

    receivers: int
    sent: int = 0  # values the sender's cartridge wrote
    unwritten: int = 0  # values it never wrote (openMSX stalled past two commands: see sender.tcl)
    lost: int = 0  # (value, receiver) pairs never seen by the receiver
    latency: list[float] = field(default_factory=list)
    detect: list[float] = field(default_factory=list)  # msxsync: send -> the sender's report
    round_p50: list[float | None] = field(default_factory=list)
    cpu_percent: dict[str, list[float]] = field(default_factory=dict)  # program -> per process

    def add(self, other: Measured) -> None:
        for kind, values in other.cpu_percent.items():
            self.cpu_percent.setdefault(kind, []).extend(values)
        self.sent += other.sent
        self.unwritten += other.unwritten
        self.lost += other.lost
        self.latency += other.latency
        self.detect += other.detect
        self.round_p50.append(ms(other.latency, 0.5))

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "p50_ms": ms(self.latency, 0.5),
            "p99_ms": ms(self.latency, 0.99),
            "max_ms": ms(self.latency, 1.0),
            "sent": self.sent,
            "received": len(self.latency),
            "lost": self.lost,
            "unwritten_by_sender": self.unwritten,
            "receivers": self.receivers,
            "p50_ms_per_round": self.round_p50,
        }
        for kind, values in sorted(self.cpu_percent.items()):
            result[f"cpu_percent_per_{kind}"] = round(sum(values) / len(values), 1)
        if self.detect:
            result["detect_p50_ms"] = ms(self.detect, 0.5)
            result["detect_p99_ms"] = ms(self.detect, 0.99)
        return result


def latencies(paths: Paths, receivers: int, count: int) -> Measured:
    go = go_time(paths.sent)
    sent_log = timed(read_pairs(paths.sent), go, count)
    sent = len({value for value, _ in sent_log})
    measured = Measured(receivers, sent=sent, unwritten=count - sent)
    for index in range(receivers):
        mine = arrival_ms(sent_log, timed(read_pairs(paths.received(index)), go, count), count)
        measured.latency += mine
        measured.lost += sent - len(mine)
    if paths.detected.exists():  # msxsync only
        measured.detect = arrival_ms(sent_log, timed(read_pairs(paths.detected), go, count), count)
    return measured


# ---- the floor ------------------------------------------------------------------------------


async def relay(sender: Child, receiver: Child) -> None:
    """The thinnest relay: a stderr line from the sender becomes a write into the receiver."""
    assert sender.process.stderr is not None and receiver.process.stdin is not None
    prefix = b"bench-relay "
    while line := await sender.process.stderr.readline():
        if line.startswith(prefix) and line[len(prefix) :].strip().isdigit():
            value = int(line[len(prefix) :])
            receiver.process.stdin.write(b"<command>debug write memory %d %d</command>\n" % (ADDRESS, value))
            await receiver.process.stdin.drain()


async def floor_phase(folder: Path, count: int, interval: float, build: Build) -> Measured:
    paths = Paths.make(folder)
    env = {**os.environ, **HEADLESS_ENV}
    sender_params = paths.params(0, folder / "own.log", 100, count, interval)
    receiver_params = paths.params(1, paths.received(0), RECEIVER_SPEED, count, interval)
    children = Children()
    try:
        receiver = await children.start(
            "floor receiver",
            openmsx_argv(build.program, [receiver_params, TCL / "boot.tcl", TCL / "receiver.tcl"]),
            folder / "receiver.log",
            stdin=asyncio.subprocess.PIPE,
            env={**env, "OPENMSX_HOME": str(folder / "home-receiver")},
        )
        sender = await children.start(
            "floor sender",
            openmsx_argv(
                build.program, [sender_params, TCL / "boot.tcl", TCL / "floor_tap.tcl", TCL / "sender.tcl"]
            ),
            folder / "sender.log",
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, "OPENMSX_HOME": str(folder / "home-sender")},
        )
        # The renderer msxsync's headless peers use with this version (SDL on 18, none from 20).
        renderer = build.features.headless_renderer.encode()
        for child in (receiver, sender):
            assert child.process.stdin is not None
            child.process.stdin.write(
                b"<openmsx-control>\n<command>set renderer %s</command>\n<command>set power on</command>\n"
                % renderer
            )
        async with asyncio.TaskGroup() as tasks:
            relaying = tasks.create_task(relay(sender, receiver))
            cpu = await measure(paths, 1, count, interval, children)
            relaying.cancel()
    finally:
        await children.stop()
    measured = latencies(paths, 1, count)
    measured.cpu_percent = cpu
    return measured


# ---- msxsync --------------------------------------------------------------------------------


def make_games(folder: Path) -> Path:
    """A games folder with the test cartridge and a definition sharing E020-E02F, no armed-when."""
    folder.mkdir()
    rom = folder / "testcart.rom"
    shutil.copyfile(CARTRIDGE, rom)
    sha1 = hashlib.sha1(rom.read_bytes()).hexdigest()
    (folder / "bench.regions").write_text(
        "testcart.rom\n"
        "#! msxsync 1\n"
        "#! title msxsync end-to-end benchmark\n"
        f"#! machine {MACHINE}\n"
        f"#! sha1 {sha1} tests/cartridge/testcart.rom\n"
        "#! merge lww\n"
        f"{REGION[0]:04x} {REGION[1]:04x} the benchmark byte and its neighbours\n"
    )
    return folder


async def msxsync_phase(
    folder: Path,
    games: Path,
    peers: int,
    count: int,
    interval: float,
    log_level: str,
    build: Build,
    source: Path = ROOT,
) -> Measured:
    """Peer 0 hosts the rendezvous and sends; peers 1.. receive. The peers run from SOURCE (this
    tree, or the baseline's; only this tree's sender gets the tap, whose report format may differ)."""
    paths = Paths.make(folder)
    port = unused_port()
    children = Children()
    try:
        for index in range(peers):
            # The sender logs what lands in its own RAM too; that log is only for reading.
            received = paths.received(index - 1) if index else folder / "own.log"
            speed = RECEIVER_SPEED if index else 100
            params = paths.params(index, received, speed, count, interval)
            scripts = [params, TCL / "boot.tcl", TCL / "receiver.tcl"]
            if index == 0:
                scripts += [TCL / "sender.tcl"]
                scripts += [TCL / "msxsync_tap.tcl"] if source == ROOT else []
            argv = [
                sys.executable,
                "-m",
                "peer.cli",
                "--game",
                "bench",
                "--headless",
                "--openmsx",
                build.program,
            ]
            argv += ["--ice-address", "127.0.0.1", "--state-dir", str(folder / f"state-{index}")]
            argv += ["--room", "bench", "--name", f"peer{index}", "--log-level", log_level]
            for script in scripts:
                argv += ["--openmsx-script", str(script)]
            if index == 0:
                argv += ["--host", "--port", str(port), "--games", str(games)]
            else:
                argv += ["--rendezvous", f"http://127.0.0.1:{port}"]
            await children.start(
                f"msxsync peer {index}", argv, folder / f"peer-{index}.log", cwd=source,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            if index == 0:
                await wait_listening(port, children)
        cpu = await measure(paths, peers - 1, count, interval, children)
    finally:
        await children.stop()
    measured = latencies(paths, peers - 1, count)
    measured.cpu_percent = cpu
    return measured


async def wait_listening(port: int, children: Children) -> None:
    """Wait for the host's rendezvous, so joiners do not give up on a connection refused."""
    async with asyncio.timeout(60):
        while True:
            children.check_alive()
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.1)


# ---- main -----------------------------------------------------------------------------------


def describe(label: str, result: dict[str, Any]) -> str:
    line = (
        f"{label:<14} p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  max {result['max_ms']} ms  "
        f"received {result['received']}/{result['sent'] * result['receivers']}  lost {result['lost']}"
    )
    if result["unwritten_by_sender"]:
        line += f" (and {result['unwritten_by_sender']} the sender's game never wrote)"
    if "detect_p50_ms" in result:
        line += f"  sender reports after {result['detect_p50_ms']} ms p50"
    cpu = [f"{key.rsplit('_', 1)[1]} {value}%" for key, value in result.items() if key.startswith("cpu_")]
    if cpu:
        line += "  CPU per process: " + ", ".join(cpu)
    return line


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or not floor:
        return None
    return round(value / floor, 2)


async def run(options: argparse.Namespace) -> dict[str, Any]:
    """Rounds of floor, msxsync 2 peers, msxsync 4 peers (interleaved, so that load from
    elsewhere on the machine falls on every kind alike); samples are pooled per kind."""
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM ends the run like Ctrl-C does: cancelled, so every `finally` stops its processes.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    programs = ["msxsync", "baseline"] if options.baseline is not None else ["msxsync"]
    per_build = ["floor", *(f"{program}_{peers}" for peers in options.peers for program in programs)]
    kinds = [kind + suffix(options, build) for build in options.builds for kind in per_build]
    pooled = {kind: Measured(receivers_of(kind)) for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="msxsync-bench-e2e-") as temp:
        work = Path(temp)
        games = make_games(work / "games")
        try:
            await rounds(options, work, games, kinds, pooled)
        except BenchError as exc:
            raise BenchError(f"{exc}\nlogs kept in {keep_logs(work)}") from None
        if options.keep:
            print(f"logs kept in {keep_logs(work)}", flush=True)
    return report(options, pooled)


def suffix(options: argparse.Namespace, build: Build) -> str:
    """How a kind names its build: nothing with one `--openmsx` (the output as it always was),
    else ``@18``, ``@21``..."""
    return "" if len(options.builds) == 1 else f"@{build.label}"


def receivers_of(kind: str) -> int:
    name = kind.partition("@")[0]
    return 1 if name == "floor" else int(name.rsplit("_", 1)[1]) - 1


def keep_logs(work: Path) -> Path:
    kept = Path(tempfile.mkdtemp(prefix="msxsync-bench-e2e-kept-"))
    shutil.copytree(work, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("home-*", "state-*"))
    return kept


async def rounds(
    options: argparse.Namespace, work: Path, games: Path, kinds: list[str], pooled: dict[str, Measured]
) -> None:
    interval = 1.0 / options.rate
    for round_number in range(1, options.rounds + 1):
        shift = (round_number - 1) % len(kinds)  # each kind follows another each round: no fixed order
        for kind in kinds[shift:] + kinds[:shift]:
            folder = work / f"{kind.replace('@', '-')}-round{round_number}"
            name, _, label = kind.partition("@")
            build = next(b for b in options.builds if not label or b.label == label)
            if name == "floor":
                measured = await floor_phase(folder, options.writes, interval, build)
            else:
                peers = pooled[kind].receivers + 1
                source = options.baseline if name.startswith("baseline") else ROOT
                measured = await msxsync_phase(
                    folder, games, peers, options.writes, interval, options.peer_log_level, build, source
                )
            pooled[kind].add(measured)
            label = (
                f"{name.replace('_', ' ')}{'' if name == 'floor' else 'p'}{kind[len(name) :]} r{round_number}"
            )
            print(describe(label, _round(measured)), flush=True)


def _round(measured: Measured) -> dict[str, Any]:
    pool = Measured(measured.receivers)
    pool.add(measured)
    return pool.summary()


def report(options: argparse.Namespace, pooled: dict[str, Measured]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "e2e",
        "writes": options.writes,
        "rounds": options.rounds,
        "rate_hz": options.rate,
        "receiver_speed": RECEIVER_SPEED,
        # Other work on the machine shows in the figures (msxsync runs more processes than the
        # floor): say how busy it was.
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "goal": {"p50_ratio": GOAL_P50, "p99_ratio": GOAL_P99},
        "openmsx": {
            build.label: {
                "version": str(build.features.version),
                "headless_renderer": build.features.headless_renderer,
            }
            for build in options.builds
        },
    }
    met = True
    for build in options.builds:
        met = report_build(options, pooled, suffix(options, build), result) and met
    result["goal_met"] = met
    return result


def report_build(
    options: argparse.Namespace, pooled: dict[str, Measured], at: str, result: dict[str, Any]
) -> bool:
    """One build's figures into RESULT (keys end in AT: "" or "@21"), against that build's floor."""
    floor = pooled[f"floor{at}"].summary()
    result[f"floor{at}"] = floor
    print(describe(f"floor{at}", floor), flush=True)
    for peers in options.peers if options.baseline is not None else ():
        baseline = pooled[f"baseline_{peers}{at}"].summary()
        baseline["p50_ratio"] = ratio(baseline["p50_ms"], floor["p50_ms"])
        baseline["p99_ratio"] = ratio(baseline["p99_ms"], floor["p99_ms"])
        result[f"baseline_{peers}{at}"] = baseline
        print(
            describe(f"baseline {peers}p{at}", baseline)
            + f"  vs floor: p50 {baseline['p50_ratio']}x p99 {baseline['p99_ratio']}x",
            flush=True,
        )
    met = True
    for peers in options.peers:
        mesh = pooled[f"msxsync_{peers}{at}"].summary()
        mesh["p50_ratio"] = ratio(mesh["p50_ms"], floor["p50_ms"])
        mesh["p99_ratio"] = ratio(mesh["p99_ms"], floor["p99_ms"])
        meets = (
            mesh["p50_ratio"] is not None
            and mesh["p99_ratio"] is not None
            and mesh["p50_ratio"] <= GOAL_P50
            and mesh["p99_ratio"] <= GOAL_P99
        )
        met = met and meets
        if options.baseline is not None:
            old = result[f"baseline_{peers}{at}"]
            mesh["p50_vs_baseline"] = ratio(mesh["p50_ms"], old["p50_ms"])
            mesh["p99_vs_baseline"] = ratio(mesh["p99_ms"], old["p99_ms"])
        result[f"msxsync_{peers}{at}"] = mesh
        print(
            describe(f"msxsync {peers}p{at}", mesh)
            + f"  vs floor: p50 {mesh['p50_ratio']}x p99 {mesh['p99_ratio']}x"
            + ("  goal met" if meets else f"  goal NOT met (<= {GOAL_P50}x / {GOAL_P99}x)")
            + (
                f"  vs baseline: p50 {mesh['p50_vs_baseline']}x p99 {mesh['p99_vs_baseline']}x"
                if options.baseline is not None
                else ""
            ),
            flush=True,
        )
    return met


def parse_peers(text: str) -> list[int]:
    try:
        counts = [int(word) for word in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of peer counts, e.g. 2,4") from None
    if not counts or any(not 2 <= n <= 8 for n in counts):
        raise argparse.ArgumentTypeError("peer counts must be between 2 and 8")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100, help="timed writes per phase (default 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="writes per second (default 10)")
    parser.add_argument("--peers", type=parse_peers, default=[2, 4], help="msxsync peer counts (default 2,4)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of floor and msxsync runs, pooled (default 3)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, 5 writes, 2 peers only")
    parser.add_argument(
        "--peer-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the msxsync peers' --log-level (their logs are kept with --keep)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure the peers of this source tree (e.g. `git worktree add DIR OLD-COMMIT`), "
        "interleaved with the others (default: none)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs (printed where; always kept after a failure)"
    )
    parser.add_argument(
        "--openmsx",
        action="append",
        metavar="PROGRAM",
        help="openMSX program to measure with, repeatable (one per version): each gets its own "
        "floor and peers, interleaved in the same rounds, and its figures end in @VERSION "
        "(default: openmsx). --baseline runs with each too: a tree older than openMSX 20 "
        "support fails on 20 and later",
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.writes, options.peers, options.rounds = 5, [2], 1
    if not 1 <= options.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    if not 1 <= options.writes <= 240:  # values 1..writes must stay below the warm-up values
        parser.error("--writes must be between 1 and 240")
    if not 0.5 <= options.rate <= 50:
        parser.error("--rate must be between 0.5 and 50")
    if options.baseline is not None:
        options.baseline = options.baseline.resolve()
        if not (options.baseline / "peer" / "cli.py").is_file():
            parser.error(f"--baseline {options.baseline}: not an msxsync source tree (no peer/cli.py)")
    started = time.monotonic()
    try:
        options.builds = [find_build(program) for program in options.openmsx or ["openmsx"]]
        labels = [build.label for build in options.builds]
        if len(set(labels)) != len(labels):
            raise BenchError(f"two --openmsx of the same version ({', '.join(labels)}): give one of each")
        result = asyncio.run(run(options))
    except BenchError as exc:
        print(f"bench_e2e: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_e2e: interrupted", file=sys.stderr)
        return 130
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
