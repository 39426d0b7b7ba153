"""Ctrl-C and `kill` (SIGTERM) reaching an asyncio program, on every system.

asyncio's `add_signal_handler` exists only on POSIX: on Windows it raises NotImplementedError,
which would end msxsync-peer and msxsync-rendezvous at start. There `signal.signal` takes the
handler instead, and hands the call to the event loop (`call_soon_threadsafe` also wakes a loop
waiting for I/O). Used by the rendezvous and by the peer (which imports the rendezvous anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def on_signals(
    numbers: tuple[signal.Signals, ...], callback: Callable[[signal.Signals], None]
) -> Iterator[None]:
    """While inside, each of the signals NUMBERS calls CALLBACK(number) in the running loop."""
    loop = asyncio.get_running_loop()
    if sys.platform == "win32":
        previous = {number: signal.getsignal(number) for number in numbers}
        for number in numbers:
            signal.signal(
                number, lambda got, _frame: loop.call_soon_threadsafe(callback, signal.Signals(got))
            )
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return
    for number in numbers:
        loop.add_signal_handler(number, callback, number)
    try:
        yield
    finally:
        for number in numbers:
            loop.remove_signal_handler(number)
