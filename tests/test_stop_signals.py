"""Ctrl-C and SIGTERM reach the loop on every system (`rendezvous.stop_signals`)."""

from __future__ import annotations

import asyncio
import os
import signal

from rendezvous.stop_signals import on_signals


async def test_each_signal_calls_back_with_its_number_and_the_handlers_go_after() -> None:
    got: list[signal.Signals] = []
    called = asyncio.Event()

    def note(number: signal.Signals) -> None:
        got.append(number)
        called.set()

    with on_signals((signal.SIGINT, signal.SIGTERM), note):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(called.wait(), 5)
    assert got == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # nothing of ours left behind
