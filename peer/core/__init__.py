"""The pure sync core: no I/O, no asyncio, no clock or randomness of its own.

Everything here is deterministic given its inputs (time comes in as `now` arguments), so it is
tested exhaustively with Hypothesis. It must not import asyncio, aiortc, aiohttp or subprocess;
`tests/test_core_purity.py` checks that.
"""
