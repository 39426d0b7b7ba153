"""The applier's lanes (issue 18, F3): byte writes never wait behind on-screen messages, and a
flood of messages keeps only the newest few. A fake openMSX link records what it was asked."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from games.definition import Region
from peer.applier import MESSAGES_KEPT, Applier, ShowMessage
from peer.core.emulator.gating import Gate, WriteToEmulator
from peer.openmsx import CommandError, OpenMSXLink

REGIONS = (Region(0xC000, 0xC0FF),)


class FakeLink:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.changed = asyncio.Event()

    async def apply(self, runs: Any, adds: Any) -> list[int]:
        self.done.append("write")
        self.changed.set()
        return []

    async def show_message(self, text: str, level: str = "info") -> None:
        await asyncio.sleep(0)  # a round trip to openMSX
        self.done.append(text)
        self.changed.set()


class ArmedGate:
    armed = True


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
