#!/usr/bin/env python3
"""Crash test: three players write shared bytes while they are killed and restarted at random.

The test issue 11 was found with, so that its figures can be repeated. On loopback only:
  * a standalone rendezvous (`python -m rendezvous.cli --host 127.0.0.1`) serving a games folder
    made here: the test cartridge (tests/cartridge/testcart.rom, which clears C000-EFFF at boot)
    and `testcart.regions` sharing E010-E01F and E020-E021, with no armed-when rule;
  * three players `python -m peer.cli --headless --ice-address 127.0.0.1 --rendezvous URL
    --room crash --game testcart`, each with its own folder, state folder and TMPDIR, and this
    test's own control connection to each one's openMSX (tests/peer_harness.py).

For --duration seconds (default 180), with `random.Random(--seed)`:
  * writes: every 0.1-0.5 s an armed player writes one shared byte (`debug write memory`); the
    value names the author and a per-address counter (scripts/crash_figures.py), no address is
    written twice within a second, and every write is logged (author, address, value, wall time);
  * chaos: every 3-12 s a running player (never the last one) is killed with kill -9 (peer and
    its openMSX at once, or the peer alone) or SIGTERM, often right after a write of its own, and
    restarted from the same folders after a 1-10 s pause; or (STOP_SHARE of the time) its peer
    process is stopped (SIGSTOP) for 6-12 s, longer than the others take to drop it as silent,
    while its emulator plays on: its game writes a byte, and 1.5 s later another player writes the
    same byte (issue 31's case: the newer write must stay everywhere);
  * watching: every 0.25 s each emulator's shared bytes (a write *reached the room* once another
    player's emulator showed it; an armed player showing zero where the room had a value is a
    wipe), each peer's log (when it armed: "sharing with the room"), every 3 s each peer's and
    openMSX's VmRSS.
Then the phases that end a run:
  1. settle: time until the three emulators' shared bytes are equal and equal to each disk's
     `bytes` table, counted from the last restart; the writes lost so far;
  2. a lone restart (issue 11's bug): every player stops (kill -9 or SIGTERM), the rendezvous
     shows no player, one restarts alone; does it arm at once (before the cartridge's boot
     clear) and does it wipe the bytes, in RAM and on disk?
  3. the other two restart; time to identical again; the final figures: lost writes (and how long
     before its author's kill each was made), database sizes, RSS.
Rollbacks (scripts/crash_figures.py): an emulator showing an older write after a newer one that
had reached the room. Prints a human summary, then one final JSON line. Exits 1 if a write was
lost, a newer write was taken back, bytes were wiped or the replicas did not end identical; 2 if
the run itself failed. Every wait has a deadline; every process started here is stopped on exit,
also on errors and Ctrl-C. The run's folder (logs, state
folders, events.jsonl) is kept when the run fails or with --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crash_figures import Ledger, Lost, Rollback, Write, spread, wiped
from crash_processes import (
    ARM_AFTER,
    KILLS,
    ROOM,
    SHARED,
    CrashTestError,
    Events,
    Player,
    Rendezvous,
    rss_kb,
    wait_for,
)

WRITE_GAP = (0.1, 0.5)  # seconds between two writes (by anyone)
ADDRESS_QUIET = 1.0  # no address is written twice within this (LWW ties are not the question)
KILL_GAP = (3.0, 12.0)  # seconds between two kills
RESTART_PAUSE = (1.0, 10.0)  # seconds a killed player stays down
KILL_WEIGHTS = (0.4, 0.3, 0.3)  # kill -9 of peer and openMSX, of the peer alone; SIGTERM
WRITE_BEFORE_KILL = 0.6  # share of kills that come right after a write of the victim's own
STOP_SHARE = 0.3  # share of chaos events that stop a peer's process instead of killing it
STOP_FOR = (6.0, 12.0)  # seconds a stopped peer stays stopped: past the silence limit (5 s)
CONTEST_AFTER = 1.5  # seconds from the stopped player's write to another player's, same byte
POLL, RSS_EVERY = 0.25, 3.0
ARM_WITHIN, SETTLE_WITHIN, EMPTY_WITHIN = 90.0, 90.0, 30.0
Sample = tuple[int | None, int | None, bool]  # VmRSS kB of the peer and of its openMSX; armed
WIPE_WINDOW = 20.0  # seconds after a restart in which zeros at the others are put down to it
LONE_FIELDS = ("player", "armed_after_s", "armed_emulated_s", "armed_early")


class Crash:
    """One run: the players, the ledger of writes and kills, and what the watchers saw."""

    def __init__(
        self, options: argparse.Namespace, folder: Path, rendezvous: Rendezvous, events: Events
    ) -> None:
        master = random.Random(options.seed)
        self.rng_writes, self.rng_chaos, self.rng_end = (
            random.Random(master.getrandbits(64)) for _ in range(3)
        )
        self.options = options
        self.events = events
        self.rendezvous = rendezvous
        args = ["--rendezvous", rendezvous.url, "--room", ROOM, "--game", "testcart"]
        self.players = [
            Player(i, folder / name, args, events) for i, name in enumerate(("alice", "bob", "carol"))
        ]
        self.ledger = Ledger()
        self.done = asyncio.Event()
        self.last_written: dict[int, float] = {}
        self.rss: dict[str, list[Sample]] = {p.name: [] for p in self.players}
        self.shown: dict[tuple[str, int, int], int] = {}  # (player, incarnation, address) -> value
        self.zeros: dict[tuple[str, int, int], float] = {}  # when it went from a value to zero
        self.restarts = 0
        self.stops = 0
        self.figures: dict[str, Any] = {}

    # ---- watchers --------------------------------------------------------------------------------

    async def watch(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every(0.05, self._check_arming))
            group.create_task(self._every(POLL, self._look))
            group.create_task(self._every(RSS_EVERY, self._sample_rss))

    async def _every(self, period: float, step: Any) -> None:
        while not self.done.is_set():
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), period)

    async def _check_arming(self) -> None:
        for player in self.players:
            await player.check_armed()

    async def _look(self) -> None:
        """Note which writes other emulators show, and bytes an armed emulator saw go to zero."""
        views = await asyncio.gather(*(p.shared() for p in self.players))
        now = time.time()
        for player, data in zip(self.players, views, strict=True):
            if data is None:
                continue
            settled = player.armed_at is not None and now - player.armed_at > 1.0
            for address, value in zip(SHARED, data, strict=True):
                self.ledger.shown(player.name, player.incarnation, address, value, now)
                key = (player.name, player.incarnation, address)
                if value == 0 and self.shown.get(key) and settled and key not in self.zeros:
                    self.zeros[key] = now  # no write of this test is a zero: a published boot clear
                    self.events.log(
                        "zero", player=player.name, incarnation=player.incarnation, address=address
                    )
                self.shown[key] = value

    async def _sample_rss(self) -> None:
        for player in self.players:
            peer = player.peer
            if peer is not None and peer.process is not None:
                sample = (rss_kb(peer.process.pid), rss_kb(peer.openmsx_pid), player.armed)
                self.rss[player.name].append(sample)
                self.events.log("rss", player=player.name, peer_kb=sample[0], openmsx_kb=sample[1])

    # ---- the run ---------------------------------------------------------------------------------

    async def play(self) -> None:
        await asyncio.gather(*(p.start() for p in self.players))
        await self.wait_armed(self.players)
        self.events.log("chaos", duration=self.options.duration)
        start = time.time()
        deadline = start + self.options.duration
        async with asyncio.TaskGroup() as group:
            group.create_task(self.write_loop(deadline))
            group.create_task(self.chaos_loop(deadline, group))
        chaos_end = time.time()
        self.figures["chaos_s"] = round(chaos_end - start, 1)
        settle = await self.settle("after the chaos")
        self.figures["after_chaos"] = settle
        self.figures["lost_in_chaos"] = self.ledger.lost(settle["room"], until=chaos_end)
        self.figures["closest_surviving_s"] = self.closest_surviving(settle["room"], chaos_end)
        self.figures["unpublished"] = self.ledger.unpublished(chaos_end)
        await self.lone_restarts(settle["room"])
        others = [p for p in self.players if not p.running]
        await asyncio.gather(*(p.start() for p in others))
        self.restarts += len(others)
        self.figures["at_end"] = await self.settle("after the last restart")
        self.figures["db_bytes"] = {p.name: p.database_bytes() for p in self.players}

    async def wait_armed(self, players: list[Player]) -> None:
        async def armed() -> bool:
            return all(p.armed for p in players)

        await wait_for(armed, "every player to arm", ARM_WITHIN)

    async def write_loop(self, deadline: float) -> None:
        rng = self.rng_writes
        while time.time() < deadline:
            await asyncio.sleep(rng.uniform(*WRITE_GAP))
            armed = [p for p in self.players if p.armed]
            if armed:
                player = rng.choice(armed)
                async with player.lock:
                    await self.write_one(player, rng)

    async def write_one(self, player: Player, rng: random.Random) -> None:
        now = time.time()
        quiet = [a for a in SHARED if now - self.last_written.get(a, 0.0) > ADDRESS_QUIET]
        if quiet:
            address = rng.choice(quiet)
            self.last_written[address] = now
            await player.write(self.ledger, address)

    async def chaos_loop(self, deadline: float, group: asyncio.TaskGroup) -> None:
        rng = self.rng_chaos
        while True:
            await asyncio.sleep(rng.uniform(*KILL_GAP))
            if time.time() >= deadline:
                return
            running = [p for p in self.players if p.running]
            if len(running) < 2:
                continue  # the room stays alive in this phase; the lone restart comes later
            victim = rng.choice(running)
            if rng.random() < STOP_SHARE:
                await self.stop_for(victim, [p for p in running if p is not victim], rng)
                continue
            how = rng.choices(KILLS, KILL_WEIGHTS)[0]
            write_first, delay = rng.random() < WRITE_BEFORE_KILL, rng.uniform(0.0, 0.2)
            pause = rng.uniform(*RESTART_PAUSE)
            async with victim.lock:
                if write_first and victim.armed:
                    await self.write_one(victim, rng)
                    await asyncio.sleep(delay)
                await victim.kill(how, self.ledger)
            group.create_task(self.restart_later(victim, pause))

    async def stop_for(self, victim: Player, others: list[Player], rng: random.Random) -> None:
        """Stop VICTIM's peer process a while; meanwhile its game and another player's write the
        same byte, the other one later (the newer write must win everywhere)."""
        seconds = rng.uniform(*STOP_FOR)
        if not victim.signal_peer(signal.SIGSTOP):
            return
        self.stops += 1
        self.events.log("stop", player=victim.name, seconds=round(seconds, 2))
        started = time.time()
        try:
            await asyncio.sleep(1.0)
            address = await self.contested_write(victim, rng)
            other = rng.choice([p for p in others if p.armed] or [None])
            if address is not None and other is not None:
                await asyncio.sleep(CONTEST_AFTER)
                async with other.lock:
                    self.last_written[address] = time.time()
                    await other.write(self.ledger, address)
            await asyncio.sleep(max(0.0, started + seconds - time.time()))
        finally:
            victim.signal_peer(signal.SIGCONT)
            self.events.log("cont", player=victim.name)

    async def contested_write(self, player: Player, rng: random.Random) -> int | None:
        """A write by PLAYER's game to a byte nobody wrote in the last ADDRESS_QUIET seconds."""
        now = time.time()
        quiet = [a for a in SHARED if now - self.last_written.get(a, 0.0) > ADDRESS_QUIET]
        if not quiet:
            return None
        address = rng.choice(quiet)
        async with player.lock:
            self.last_written[address] = now
            written = await player.write(self.ledger, address)
        return address if written is not None else None

    async def restart_later(self, player: Player, pause: float) -> None:
        await asyncio.sleep(pause)
        async with player.lock:
            await player.start()
        self.restarts += 1

    async def identical(self) -> dict[int, int] | None:
        """The room's bytes if every player is armed and every emulator and every disk hold the
        same ones, else None."""
        if not all(p.armed for p in self.players):
            return None
        views = await asyncio.gather(*(p.shared() for p in self.players))
        if any(v is None for v in views) or len(set(views)) != 1 or views[0] is None:
            return None
        room = dict(zip(SHARED, views[0], strict=True))
        disks = await asyncio.to_thread(lambda: [p.stored() for p in self.players])
        if any(disk.get(a, 0) != v for disk in disks for a, v in room.items()):
            return None
        return room

    async def settle(self, what: str) -> dict[str, Any]:
        last_start = max(p.started_at for p in self.players)
        found: dict[int, int] = {}

        async def same() -> bool:
            room = await self.identical()
            if room is not None:
                found.update(room)
            return room is not None

        try:
            await wait_for(same, f"identical replicas {what}", SETTLE_WITHIN)
        except CrashTestError:
            return {"identical": False, "room": self.first_disk(), "after_restart_s": None}
        took = round(time.time() - last_start, 2)
        self.events.log("identical", what=what, after_restart_s=took, room=self.hex(found))
        return {"identical": True, "room": found, "after_restart_s": took}

    def first_disk(self) -> dict[int, int]:
        """With no agreement, the first player's disk stands for the room."""
        return {a: self.players[0].stored().get(a, 0) for a in SHARED}

    async def lone_restarts(self, room: dict[int, int]) -> None:
        """Everyone stops, the room empties, one player restarts alone: does it keep the bytes?

        Then (for the next round) it writes every shared byte and stops again, alone."""
        rng = self.rng_end
        lone = rng.choice(self.players)
        first = rng.randrange(len(KILLS))
        rounds = []
        for number in range(self.options.lone):
            how = KILLS[(first + number) % len(KILLS)]
            hows = {p.name: how if p is lone else rng.choice(KILLS) for p in self.players}

            async def stop(player: Player, how: str) -> None:
                async with player.lock:
                    await player.kill(how, self.ledger)

            await asyncio.gather(*(stop(p, hows[p.name]) for p in self.players if p.running))

            async def empty() -> bool:
                return await self.rendezvous.players() == 0

            await wait_for(empty, "the rendezvous to show no player", EMPTY_WITHIN)
            rounds.append(await self.restart_alone(lone, how, room))
            if number + 1 < self.options.lone:
                room = await self.write_alone(lone)
        self.figures["lone"] = rounds

    async def restart_alone(self, lone: Player, how: str, room: dict[int, int]) -> dict[str, Any]:
        self.events.log("lone", player=lone.name, stopped=how)
        async with lone.lock:
            await lone.start(lone=True)
        self.restarts += 1
        await self.wait_armed([lone])
        peer = lone.peer
        assert peer is not None

        async def past_boot() -> bool:  # well past the boot clear and the --arm-after
            return await peer.emulated_time() >= ARM_AFTER + 3.0

        await wait_for(past_boot, f"{lone.name}'s emulation to pass {ARM_AFTER + 3:g} s", 60.0)
        ram = await self.wait_alone_stored(lone)
        disk = lone.stored()
        result = {
            **{k: lone.starts[-1].get(k) for k in LONE_FIELDS},
            "stopped_with": how,
            "before": self.hex(room),
            "ram_after": self.hex(ram),
            "disk_after": self.hex({a: disk.get(a, 0) for a in SHARED}),
            "wiped_ram": len(wiped(room, ram)),
            "wiped_disk": len(wiped(room, disk)),
        }
        self.events.log("lone-result", **result)
        return result

    async def wait_alone_stored(self, lone: Player) -> dict[int, int]:
        """The lone player's RAM once its disk holds the same bytes (or after 10 s)."""
        ram: dict[int, int] = {}

        async def stored() -> bool:
            data = await lone.shared()
            disk = await asyncio.to_thread(lone.stored)
            if data is not None:
                ram.update(zip(SHARED, data, strict=True))
            return data is not None and all(disk.get(a, 0) == v for a, v in ram.items())

        with contextlib.suppress(CrashTestError):
            await wait_for(stored, f"{lone.name}'s RAM and disk to agree", 10.0)
        return ram

    async def write_alone(self, lone: Player) -> dict[int, int]:
        """The lone player writes every shared byte; they reach the room once on its disk."""
        writes = []
        async with lone.lock:
            for address in SHARED:
                write = await lone.write(self.ledger, address)
                if write is not None:
                    writes.append(write)
        ram = await self.wait_alone_stored(lone)
        disk = lone.stored()
        for write in writes:
            if disk.get(write.address) == write.value:
                self.ledger.reached.setdefault(write, time.time())
        return ram

    def closest_surviving(self, room: dict[int, int], until: float) -> float | None:
        lost = {item.write for item in self.ledger.lost(room, until)}
        gaps = []
        for write in self.ledger.reached:
            kill = self.ledger.next_kill(write)
            if write not in lost and kill is not None and write.sent <= until:
                gaps.append(kill.at - write.done)
        return min(gaps, default=None)

    def wiping_starts(self) -> list[dict[str, Any]]:
        """Restarts after which other armed emulators saw bytes go to zero: each zero is put
        down to the latest start of another player before it (within WIPE_WINDOW), an early
        armed one if there is one."""
        starts = sorted(
            (
                (self.events.t0 + s["at"], p.name, i)
                for p in self.players
                for i, s in enumerate(p.starts)
                if i
            ),
        )
        blamed: dict[tuple[str, int], set[int]] = {}
        for (viewer, _, address), at in self.zeros.items():
            before = [(t, name, i) for t, name, i in starts if name != viewer and at - WIPE_WINDOW <= t <= at]
            early = [s for s in before if self.start_record(s[1], s[2]).get("armed_early")]
            before = early or before  # an early arm publishes the boot clear a few seconds later
            if before:
                _, name, i = before[-1]
                blamed.setdefault((name, i), set()).add(address)
        found = []
        for player in self.players:
            for i, start in enumerate(player.starts):
                if (player.name, i) in blamed:
                    found.append({**start, "others_zeroed": len(blamed[(player.name, i)])})
        return found

    def start_record(self, name: str, index: int) -> dict[str, Any]:
        return next(p for p in self.players if p.name == name).starts[index]

    @staticmethod
    def hex(room: dict[int, int]) -> str:
        return bytes(room.get(a, 0) for a in SHARED).hex()

    async def stop_all(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.players), return_exceptions=True)


# ---- figures ---------------------------------------------------------------------------------


def lost_json(items: list[Lost], events: Events) -> list[dict[str, Any]]:
    return [
        {
            "author": item.write.author,
            "address": f"{item.write.address:04X}",
            "value": item.write.value,
            "t": events.rel(item.write.sent),
            "before_kill_s": None if item.before_kill is None else round(item.before_kill, 3),
            "final_value": item.final_value,
            "replaced_by": None if item.replaced_by is None else item.replaced_by.author,
            "replaced_older_by_s": None
            if item.replaced_by is None
            else round(item.write.sent - item.replaced_by.sent, 3),
        }
        for item in items
    ]


def rss_json(samples: list[Sample]) -> dict[str, Any]:
    """Min, max, first and last VmRSS of the peer and its openMSX while armed (steady state)."""
    out: dict[str, Any] = {"samples": len(samples)}
    for column, name in ((0, "peer_kb"), (1, "openmsx_kb")):
        values = [kb for kb, armed in ((s[column], s[2]) for s in samples) if kb is not None and armed]
        if values:
            out[name] = {"min": min(values), "max": max(values), "first": values[0], "last": values[-1]}
    return out


def summarise(crash: Crash, events: Events) -> dict[str, Any]:
    f = crash.figures
    ledger = crash.ledger
    arms = [s for p in crash.players for s in p.starts if "armed_after_s" in s]
    lost_final = ledger.lost(f["at_end"]["room"])
    unpublished = f["unpublished"]
    for write, gap in unpublished:
        events.log(
            "unpublished",
            author=write.author,
            address=write.address,
            value=write.value,
            t_write=events.rel(write.sent),
            before_kill_s=gap,
        )
    lost_chaos_gaps = [i.before_kill for i in f["lost_in_chaos"] if i.before_kill is not None]
    return {
        "seed": crash.options.seed,
        "duration_s": crash.options.duration,
        "players": len(crash.players),
        "kills": len(ledger.kills),
        "kills_by_kind": {how: sum(k.how == how for k in ledger.kills) for how in KILLS},
        "restarts": crash.restarts,
        "writes": len(ledger.writes),
        "writes_reached_room": len(ledger.reached),
        "writes_unpublished": len(unpublished),
        "unpublished_before_kill_s": spread(round(g, 3) for _, g in unpublished if g is not None),
        "lost_in_chaos": len(f["lost_in_chaos"]),
        "lost_in_chaos_before_kill_s": spread(round(g, 3) for g in lost_chaos_gaps),
        "closest_surviving_before_kill_s": rounded(f["closest_surviving_s"]),
        "lost": len(lost_final),
        "addresses_lost": len({i.write.address for i in lost_final}),
        "lost_writes": lost_json(lost_final, events)[:60],
        "stops": crash.stops,
        "rollbacks": len(ledger.rollbacks()),
        "rollback_cases": rollback_json(ledger.rollbacks(), events)[:20],
        "identical_after_chaos": f["after_chaos"]["identical"],
        "identical_after_chaos_s": f["after_chaos"]["after_restart_s"],
        "identical_at_end": f["at_end"]["identical"],
        "time_to_identical_s": f["at_end"]["after_restart_s"],
        "final_room": Crash.hex(f["at_end"]["room"]),
        "arms": len(arms),
        "armed_after_s": spread(a["armed_after_s"] for a in arms),
        "early_arms": [a for a in arms if a["armed_early"]],
        "zeros_seen": len(crash.zeros),
        "restarts_that_wiped": crash.wiping_starts(),
        "lone_restarts": f["lone"],
        "wiped": sum(max(r["wiped_ram"], r["wiped_disk"]) for r in f["lone"]),
        "wiped_by_restarts": sum(s["others_zeroed"] for s in crash.wiping_starts()),
        "rss": {name: rss_json(samples) for name, samples in crash.rss.items()},
        "db_bytes": f["db_bytes"],
    }


def rollback_json(items: list[Rollback], events: Events) -> list[dict[str, Any]]:
    return [
        {
            "viewer": item.viewer,
            "address": f"{item.address:04X}",
            "newer": {
                "author": item.newer.author,
                "value": item.newer.value,
                "t": events.rel(item.newer.sent),
            },
            "older": {
                "author": item.older.author,
                "value": item.older.value,
                "t": events.rel(item.older.sent),
            },
            "seen_at": events.rel(item.at),
        }
        for item in items
    ]


def write_json(write: Write, events: Events) -> dict[str, Any]:
    return {"author": write.author, "value": write.value, "t": events.rel(write.sent)}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def report(figures: dict[str, Any]) -> None:
    arms = figures["armed_after_s"] or {}
    kinds = ", ".join(f"{n} {how}" for how, n in figures["kills_by_kind"].items())
    lines = [
        f"crash test, seed {figures['seed']}, {figures['duration_s']:g} s of chaos, 3 players",
        f"  kills {figures['kills']} ({kinds}), restarts {figures['restarts']}",
        f"  writes {figures['writes']}: {figures['writes_reached_room']} reached the room, "
        f"{figures['writes_unpublished']} never shown by another emulator (overwritten first, "
        f"or their author died; to its kill: {figures['unpublished_before_kill_s']})",
        f"  lost during the chaos {figures['lost_in_chaos']} "
        f"(made before their author's kill: {figures['lost_in_chaos_before_kill_s']}); "
        f"closest surviving write {figures['closest_surviving_before_kill_s']} s before its kill",
        f"  identical after the chaos: {figures['identical_after_chaos']} "
        f"({figures['identical_after_chaos_s']} s after the last restart)",
        f"  arming: {figures['arms']} arms, {arms.get('min')}-{arms.get('max')} s after start "
        f"(median {arms.get('median')}); early (before {ARM_AFTER:g} emulated s): "
        f"{len(figures['early_arms'])}; bytes seen going to zero in armed emulators: "
        f"{figures['zeros_seen']}",
    ]
    for start in figures["restarts_that_wiped"]:
        lines.append(
            f"  restart of {start['player']} #{start['incarnation']} (armed "
            f"{start.get('armed_after_s')} s after start, emulated {start.get('armed_emulated_s')} s) "
            f"zeroed {start['others_zeroed']} bytes at the others"
        )
    for lone in figures["lone_restarts"]:
        lines += [
            f"  lone restart of {lone['player']} (stopped with {lone['stopped_with']}): armed "
            f"{lone['armed_after_s']} s after start at emulated {lone['armed_emulated_s']} s; wiped "
            f"{lone['wiped_ram']}/{len(SHARED)} bytes in RAM, {lone['wiped_disk']}/{len(SHARED)} on disk",
            f"    before {lone['before']}\n    after  {lone['disk_after']} (disk)",
        ]
    lines.append(
        f"  stops (SIGSTOP past the silence limit) {figures['stops']}; newer writes taken back by "
        f"older ones (rollbacks): {figures['rollbacks']}"
    )
    lines += [f"  rollback: {item}" for item in figures["rollback_cases"][:10]]
    lines.append(
        f"  lost at the end {figures['lost']} writes at {figures['addresses_lost']} addresses; "
        f"identical at the end: {figures['identical_at_end']} "
        f"({figures['time_to_identical_s']} s after the last restart)"
    )
    for name, rss in figures["rss"].items():
        peer, emu = rss.get("peer_kb", {}), rss.get("openmsx_kb", {})
        db = figures["db_bytes"][name]
        lines.append(
            f"  {name}: RSS while armed: peer {peer.get('min')}-{peer.get('max')} kB, openMSX "
            f"{emu.get('min')}-{emu.get('max')} kB ({rss['samples']} samples); database "
            f"{db['rooms.sqlite']} + wal {db['rooms.sqlite-wal']} bytes"
        )
    for item in figures["lost_writes"][:10]:
        lines.append(f"  lost: {item}")
    print("\n".join(lines), flush=True)


# ---- main ------------------------------------------------------------------------------------


async def run(options: argparse.Namespace, folder: Path) -> dict[str, Any]:
    events = Events(folder / "events.jsonl")
    rendezvous = Rendezvous(folder)
    crash = Crash(options, folder, rendezvous, events)
    try:
        await rendezvous.start()
        async with asyncio.TaskGroup() as group:
            group.create_task(crash.watch())
            try:
                await crash.play()
            finally:
                crash.done.set()
        return summarise(crash, events)
    finally:
        await crash.stop_all()
        await rendezvous.stop()
        events.close()


async def main_async(options: argparse.Namespace, folder: Path) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options, folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos (default 180)")
    parser.add_argument("--seed", type=int, default=1, help="seed of random.Random (default 1)")
    parser.add_argument("--lone", type=int, default=2, help="lone restarts in a row (default 2)")
    parser.add_argument("--folder", type=Path, help="run folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder also when all is well")
    options = parser.parse_args()
    folder = options.folder or Path(tempfile.mkdtemp(prefix="msxsync-crash-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"crash test: run folder {folder}", flush=True)
    try:
        figures = asyncio.run(main_async(options, folder))
    except (CrashTestError, ExceptionGroup, asyncio.CancelledError, KeyboardInterrupt) as exc:
        print(f"crash test failed: {exc!r}; logs in {folder}", file=sys.stderr)
        print(json.dumps({"seed": options.seed, "error": repr(exc), "folder": str(folder)}))
        return 2
    wiped = figures["wiped"] + figures["wiped_by_restarts"]
    ok = figures["lost"] == 0 and figures["rollbacks"] == 0 and wiped == 0 and figures["identical_at_end"]
    figures["ok"] = ok
    figures["folder"] = str(folder) if (options.keep or not ok) else None
    report(figures)
    print(json.dumps(figures))
    if ok and not options.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
