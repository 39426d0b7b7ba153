"""The room's durable state during a session: opening it, and saving what the merge decided.

`RoomStore` (peer.storage) is synchronous SQLite with fsync; here it runs in one worker thread so
that fsyncs never stall the event loop. What to save is taken in the loop (`SharedState.take_dirty`
and `rows_for`, plain values), so the thread never reads live state.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from peer.core.sync.state import Layout, SharedState
from peer.options import PlayerError
from peer.storage import RoomStore, StorageError, rows_for

log = logging.getLogger("msxsync.peer")
SAVE_RETRY = 5.0  # seconds between tries while saving fails


class Persistence:
    def __init__(self, path: Path, *, game: str, layout: Layout) -> None:
        self._path = path
        self._game = game
        self._layout = layout
        self._store: RoomStore | None = None
        self._changed = asyncio.Event()
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="msxsync-disk")

    async def open(self, room: str) -> tuple[SharedState, int]:
        """The room's saved state and a fresh session number (committed before it is used)."""
        try:
            self._store = store = await asyncio.to_thread(
                RoomStore, self._path, game=self._game, room=room, layout=self._layout
            )
            session = await asyncio.to_thread(store.next_session)
            state = await asyncio.to_thread(store.load)
        except StorageError as exc:
            raise PlayerError(str(exc)) from None
        return state, session

    def changed(self) -> None:
        """Something in the state may need saving: the worker will look."""
        self._changed.set()

    async def run(self, state: Callable[[], SharedState | None]) -> None:
        """Save whenever something changed. A save that fails (disk full, I/O error) loses
        nothing: what it took is put back, the player plays on from memory, and the save is
        tried again every SAVE_RETRY seconds (said once per spell of failures)."""
        failing = False
        while True:
            await self._changed.wait()
            try:
                await self.flush(state())
            except (StorageError, sqlite3.Error, OSError) as exc:
                if not failing:
                    log.error("could not save the room's state, trying again every %g s: %s", SAVE_RETRY, exc)
                failing = True
                await asyncio.sleep(SAVE_RETRY)
                self._changed.set()
            else:
                if failing:
                    log.warning("the room's state is saved again")
                failing = False

    async def flush(self, state: SharedState | None) -> None:
        self._changed.clear()
        if self._store is None or state is None or not state.has_dirty:
            return
        addresses = state.take_dirty()
        counted = state.take_dirty_contributions()
        batches, dropped = state.take_batch_changes()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._disk, self._store.write_rows, rows_for(state, addresses), counted, batches, dropped
            )
        except BaseException:  # (a cancel too: the write may not have happened)
            state.put_back(addresses, counted, batches, dropped)
            raise

    def close(self) -> None:
        self._disk.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
