"""Ctrl-C and SIGTERM reach the loop on every system (`rendezvous.stop_signals`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

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


async def test_where_the_loop_has_no_signal_handlers_signal_signal_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows' branch, run here: the handler goes through signal.signal to the loop."""
    monkeypatch.setattr(sys, "platform", "win32")
    called = asyncio.Event()
    got: list[signal.Signals] = []

    def note(number: signal.Signals) -> None:
        got.append(number)
        called.set()

    before = signal.getsignal(signal.SIGINT)
    with on_signals((signal.SIGINT,), note):
        assert signal.getsignal(signal.SIGINT) not in (before, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(called.wait(), 5)
    assert got == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) == before
