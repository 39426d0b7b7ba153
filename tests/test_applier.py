"""The applier's lanes (issue 18, F3): byte writes never wait behind on-screen messages, and a
flood of messages keeps only the newest few. A fake openMSX link records what it was asked."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from games.definition import Region
from peer.applier import MESSAGES_KEPT, Applier, ShowMessage
from peer.core.emulator.gating import AdoptRoom, Gate, WriteToEmulator
from peer.openmsx import CommandError, OpenMSXLink

REGIONS = (Region(0xC000, 0xC0FF),)


class FakeLink:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.changed = asyncio.Event()

    async def apply(self, runs: Any, adds: Any, seen: int | None = None) -> tuple[int, ...]:
        self.done.append("write")
        self.changed.set()
        return ()

    async def show_message(self, text: str, level: str = "info") -> None:
        await asyncio.sleep(0)  # a round trip to openMSX
        self.done.append(text)
        self.changed.set()


class ArmedGate:
    armed = True

    def adopted(self, *args: Any) -> list[Any]:
        return []


async def test_a_write_goes_before_messages_queued_ahead_of_it_and_old_messages_drop() -> None:
    link = FakeLink()
    applier = Applier(cast(OpenMSXLink, link), REGIONS, cast(Gate, ArmedGate()), lambda: None, lambda _: None)
    for n in range(200):  # a chat flood, already on its way to the screen
        applier.put(ShowMessage(f"spam {n}"))
    applier.put(WriteToEmulator(((0xC000, b"\x01"),)))
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(applier.run())
        async with asyncio.timeout(5):
            while len(link.done) < 1 + MESSAGES_KEPT:
                link.changed.clear()
                await link.changed.wait()
        task.cancel()
    assert link.done[0] == "write"
    assert link.done[1:] == [f"spam {n}" for n in range(200 - MESSAGES_KEPT, 200)]
    assert applier.messages_dropped == 200 - MESSAGES_KEPT


class RefusingLink(FakeLink):
    async def show_message(self, text: str, level: str = "info") -> None:
        raise CommandError("msxsync::show ...", "invalid command name")


async def test_a_message_openmsx_cannot_show_does_not_end_the_session() -> None:
    link = RefusingLink()
    applier = Applier(cast(OpenMSXLink, link), REGIONS, cast(Gate, ArmedGate()), lambda: None, lambda _: None)
    applier.put(ShowMessage("bob found the key"))
    applier.put(WriteToEmulator(((0xC000, b"\x01"),)))
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(applier.run())
        async with asyncio.timeout(5):
            while "write" not in link.done:
                link.changed.clear()
                await link.changed.wait()
        assert not task.done()  # still carrying out commands
        task.cancel()


class FakeState:
    def __init__(self) -> None:
        self.values = {0xC005: 0x02, 0xC006: 0x03}

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.values.get(address + i, 0) for i in range(length))

    def written_runs(self) -> list[tuple[int, bytes]]:
        return [(0xC005, self.read(0xC005, 2))]


class FakeReplica:
    def __init__(self) -> None:
        self.state = FakeState()

    def unwritten_addresses(self) -> list[int]:
        return []


class RecordingLink(FakeLink):
    """Records each write's runs and the last report openMSX was told had been merged."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[tuple[tuple[int, bytes], ...], int | None]] = []

    async def apply(self, runs: Any, adds: Any, seen: int | None = None) -> tuple[int, ...]:
        self.writes.append((tuple(runs), seen))
        self.changed.set()
        return ()

    async def read(self, address: int, length: int) -> bytes:
        return bytes(length)


async def first_write(
    applier: Applier, link: RecordingLink
) -> tuple[tuple[tuple[int, bytes], ...], int | None]:
    """Run the applier until it has written once; what it wrote, and the report number it told."""
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(applier.run())
        async with asyncio.timeout(5):
            while not link.writes:
                link.changed.clear()
                await link.changed.wait()
        task.cancel()
    return link.writes[0]


def applier_for(link: RecordingLink, replica: Any = None, waiting: dict[int, int] | None = None) -> Applier:
    gate = cast(Gate, ArmedGate())
    return Applier(
        cast(OpenMSXLink, link), REGIONS, gate, lambda: replica, lambda _: None, lambda: waiting or {}
    )


async def test_a_write_leaves_the_bytes_of_reports_not_merged_yet_to_the_game() -> None:
    """Issue 31: openMSX is told the last report merged, and keeps the game's bytes changed since."""
    link = RecordingLink()
    applier = applier_for(link)
    applier.reported(7)
    applier.reported(5)  # (reports are merged in order; an older number changes nothing)
    applier.put(WriteToEmulator(((0xC005, b"\x02"),)))
    _, seen = await first_write(applier, link)
    assert seen == 7


async def test_a_queued_write_gives_the_rooms_value_when_it_is_carried_out() -> None:
    replica = FakeReplica()
    link = RecordingLink()
    applier = applier_for(link, replica)
    applier.put(WriteToEmulator(((0xC005, b"\x01"),)))  # decided when the room held 01 ...
    replica.state.values[0xC005] = 0x5A  # ... then a local change was published and won
    runs, _ = await first_write(applier, link)
    assert runs == ((0xC005, b"\x5a"),)


async def test_a_write_keeps_the_games_value_still_waiting_to_be_published() -> None:
    """A backlog read at once waits for the publishing pace: the room's older value must not be
    written over the game's newer one meanwhile (issue 31)."""
    link = RecordingLink()
    applier = applier_for(link, FakeReplica(), waiting={0xC005: 0x5A})  # the game's newer byte
    applier.put(WriteToEmulator(((0xC005, b"\x02"), (0xC006, b"\x03"))))
    runs, _ = await first_write(applier, link)
    assert runs == ((0xC005, b"\x5a"), (0xC006, b"\x03"))


async def test_an_adoption_writes_every_byte_whatever_was_reported() -> None:
    link = RecordingLink()
    applier = applier_for(link, FakeReplica())
    applier.reported(9)
    applier.put(AdoptRoom("armed"))
    _, seen = await first_write(applier, link)
    assert seen is None
