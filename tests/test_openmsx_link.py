"""The openMSX link against real headless openMSX running the test cartridge, on every openMSX
build (`tests.openmsx_builds`: 18, 20 and 21).

One MSX2+ openMSX per build is shared by the module; tests that need their own (MSX1, kill,
attach) start one each. Every wait is on an event with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from games.definition import Region
from peer.core.emulator.openmsx_protocol import (
    MESSAGE_WIDGET,
    ON_SCREEN_CHARS,
    apply_command,
    parse_shown,
    request_command,
    shown_command,
    watch_script,
)
from peer.openmsx import (
    CommandError,
    Exited,
    LinkClosed,
    LocalChanges,
    OpenMSXError,
    OpenMSXLink,
    Requested,
)
from peer.openmsx.process import HEADLESS_ENV, socket_folder
from tests.openmsx_builds import Build

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(60),
]

CARTRIDGE = Path(__file__).parent / "cartridge" / "testcart.rom"
# E000-E0FF: the cartridge's variables; E140-E14F holds E141, where it copies what it read at E040;
# 4000-4003 is the cartridge's ROM header, where no write can take.
REGIONS = (Region(0xE000, 0xE0FF), Region(0xE140, 0xE14F), Region(0x4000, 0x4003))
FRAME, STEADY, BURST, ITEM, POKED, KEYED = 0xE000, 0xE001, 0xE010, 0xE020, 0xE021, 0xE022
APPLIED, SEEN = 0xE040, 0xE141
COMMAND, ARGUMENT = 0xE100, 0xE101
WAIT = 10.0

Batch = dict[int, int]


def flatten(event: LocalChanges) -> Batch:
    return {address + i: value for address, data in event.changes for i, value in enumerate(data)}


async def batches_until(link: OpenMSXLink, done: Callable[[Batch], bool], after: float) -> list[Batch]:
    """Batches from frames after emulated time AFTER, up to and including the one DONE accepts."""
    seen: list[Batch] = []
    async with asyncio.timeout(WAIT):
        async for event in link.events():
            if isinstance(event, Exited):
                pytest.fail(f"openMSX exited: {event}")
            if isinstance(event, LocalChanges) and event.emutime > after:
                seen.append(flatten(event))
                if done(seen[-1]):
                    return seen
    pytest.fail("events ended")


async def boot(link: OpenMSXLink) -> None:
    """Run past the C-BIOS logo at full speed until the cartridge's frame loop is running."""
    await link.command("set throttle off")
    await batches_until(link, lambda batch: batch.get(STEADY) == 0x42, after=0.0)
    await link.command("set throttle on")


def reaped(pid: int) -> bool:
    """No process (not even a zombie) with PID is left."""
    return not Path(f"/proc/{pid}").exists()


async def poke(link: OpenMSXLink, address: int, value: int) -> None:
    await link.command(f"debug write memory {address} {value}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def msx2(tmp_path_factory: pytest.TempPathFactory, openmsx: Build) -> AsyncIterator[OpenMSXLink]:
    async with OpenMSXLink.launch(
        REGIONS,
        home=tmp_path_factory.mktemp(f"home-{openmsx.id}"),
        machine="C-BIOS_MSX2+",
        cartridge=CARTRIDGE,
        openmsx=openmsx.program,
    ) as link:
        await boot(link)
        yield link


async def test_a_cartridge_write_is_reported_with_address_and_value(msx2: OpenMSXLink) -> None:
    now = await msx2.emulated_time()
    await poke(msx2, ARGUMENT, 0x5A)
    await poke(msx2, COMMAND, 3)
    batches = await batches_until(msx2, lambda batch: POKED in batch, after=now)
    assert batches[-1][POKED] == 0x5A


async def test_unchanged_rewrites_are_not_reported(msx2: OpenMSXLink) -> None:
    now = await msx2.emulated_time()
    batches: list[Batch] = []
    for _ in range(25):
        batches += await batches_until(msx2, lambda _: True, after=now)
    # Only the frame counter changes; STEADY (rewritten every frame) never shows up.
    assert all(set(batch) == {FRAME} for batch in batches), batches


async def test_a_held_key_is_reported_as_the_cartridge_counts(msx2: OpenMSXLink) -> None:
    now = await msx2.emulated_time()
    await msx2.command("keymatrixdown 8 1")  # space
    try:
        await batches_until(msx2, lambda batch: KEYED in batch, after=now)
    finally:
        await msx2.command("keymatrixup 8 1")


@pytest.mark.parametrize(
    "writer",
    [
        "debug write memory 0xE050 {value}",  # fires watchpoints
        "debug write {{Main RAM}} 0x2050 {value}",  # fires none; CPU E050 on this MSX2+
    ],
)
async def test_writes_by_other_tools_are_reported(msx2: OpenMSXLink, writer: str) -> None:
    value = ((await msx2.read(0xE050, 1))[0] + 0x11) % 256
    now = await msx2.emulated_time()
    await msx2.command(writer.format(value=value))
    batches = await batches_until(msx2, lambda batch: 0xE050 in batch, after=now)
    assert batches[-1][0xE050] == value


async def test_a_write_while_paused_is_reported(msx2: OpenMSXLink) -> None:
    value = ((await msx2.read(0xE051, 1))[0] + 0x22) % 256
    await msx2.command("set pause on")
    try:
        await msx2.command(f"debug write memory 0xE051 {value}")
        # Paused, emulated time stands still: the report carries the time of the pause.
        await batches_until(msx2, lambda batch: batch.get(0xE051) == value, after=0.0)
    finally:
        await msx2.command("set pause off")


async def test_a_burst_inside_one_frame_is_one_batch(msx2: OpenMSXLink) -> None:
    assert await msx2.apply([(BURST, bytes(16))]) == ()
    now = await msx2.emulated_time()
    await poke(msx2, COMMAND, 1)
    batches = await batches_until(msx2, lambda batch: BURST in batch, after=now)
    last = batches[-1]
    assert [last[BURST + i] for i in range(16)] == list(range(0x30, 0x40))
    assert not any(BURST in batch for batch in batches[:-1])
    # The values the burst passed through (10h.., 20h..) never leave openMSX.
    later = await batches_until(msx2, lambda _: True, after=now)
    assert not any(BURST + i in later[0] for i in range(16))


async def check_apply(link: OpenMSXLink, value: int) -> None:
    now = await link.emulated_time()
    assert await link.apply([(APPLIED, bytes([value]))]) == ()
    batches = await batches_until(link, lambda batch: batch.get(SEEN) == value, after=now)
    # The CPU read it (the cartridge copied it to SEEN), and it never came back as a change.
    assert not any(APPLIED in batch for batch in batches)
    assert await link.read(APPLIED, 1) == bytes([value])


async def test_apply_reaches_the_cpu_without_echo_on_msx2plus(msx2: OpenMSXLink) -> None:
    await check_apply(msx2, 0xA5)
    # Memory mapper: CPU page 3 is segment 0, so CPU E040 is Main RAM offset 2040 here.
    assert await msx2.command("debug read {Main RAM} 0x2040") == str(0xA5)


async def test_apply_refuses_bytes_outside_the_regions(msx2: OpenMSXLink) -> None:
    with pytest.raises(ValueError):
        await msx2.apply([(COMMAND, b"\x01")])


async def test_apply_leaves_the_games_bytes_changed_since_the_last_merged_report(
    msx2: OpenMSXLink,
) -> None:
    """Issue 31: remote bytes never overwrite a newer write of the game's that msxsync has not
    merged yet (its report unread, or made since the last check): it reaches the room itself."""
    now = await msx2.emulated_time()
    await msx2.command(f"debug write memory {APPLIED} 0x11")  # the game's write
    report = None
    async with asyncio.timeout(WAIT):
        async for event in msx2.events():
            if isinstance(event, LocalChanges) and event.emutime > now and APPLIED in flatten(event):
                report = event.report
                break
    assert report is not None
    assert await msx2.apply([(APPLIED, b"\x22")], seen=report - 1) == ()  # its report not merged
    assert await msx2.read(APPLIED, 1) == b"\x11"
    assert await msx2.apply([(APPLIED, b"\x22")], seen=report) == ()  # merged: the room's value
    assert await msx2.read(APPLIED, 1) == b"\x22"
    # A write since the last check (in the same Tcl command: no check between) stays, and is
    # still reported as the game's.
    now = await msx2.emulated_time()
    apply = apply_command(msx2.regions, [(APPLIED, b"\x44")], seen=report + 10**6)
    await msx2.command(f"debug write memory {APPLIED} 0x33; {apply}")
    assert await msx2.read(APPLIED, 1) == b"\x33"
    await batches_until(msx2, lambda batch: batch.get(APPLIED) == 0x33, after=now)
    # An adoption (no report number) writes every byte.
    assert await msx2.apply([(APPLIED, b"\x55")]) == ()
    assert await msx2.read(APPLIED, 1) == b"\x55"
    # The game changes the byte and back around a write within one frame: the next check still
    # reports it (the room's value went into the snapshot), so the room's merge decides.
    now = await msx2.emulated_time()
    apply = apply_command(msx2.regions, [(APPLIED, b"\x66")], seen=report + 10**6)
    await msx2.command(f"debug write memory {APPLIED} 0x77; {apply}; debug write memory {APPLIED} 0x55")
    await batches_until(msx2, lambda batch: batch.get(APPLIED) == 0x55, after=now)


async def test_apply_names_writes_that_did_not_take(msx2: OpenMSXLink) -> None:
    assert await msx2.read(0x4000, 2) == b"AB"
    assert await msx2.apply([(0x4001, b"\x00"), (APPLIED, b"\x01")]) == (0x4001,)
    assert await msx2.read(0x4000, 2) == b"AB"  # ROM stays ROM, and nothing is reported


async def test_savestate_loadstate_round_trip_is_reported(msx2: OpenMSXLink) -> None:
    before = (await msx2.read(ITEM, 1))[0]
    await msx2.command("savestate msxsync_test")
    now = await msx2.emulated_time()
    await poke(msx2, COMMAND, 2)
    await batches_until(msx2, lambda batch: batch.get(ITEM) == (before + 1) % 256, after=now)
    await msx2.command("loadstate msxsync_test")
    # loadstate rewinds emulated time: any frame after the state's time counts.
    batches = await batches_until(msx2, lambda batch: ITEM in batch, after=0.0)
    assert batches[-1][ITEM] == before


async def test_reverse_goback_is_reported(msx2: OpenMSXLink) -> None:
    # A fresh history: loadstate keeps the old timeline in it, where ITEM may be anything.
    await msx2.command("reverse stop; reverse start")
    # Let a frame pass, so the history's first snapshot cannot hold the command poked below.
    await batches_until(msx2, lambda _: True, after=await msx2.emulated_time())
    before = (await msx2.read(ITEM, 1))[0]
    now = await msx2.emulated_time()
    await poke(msx2, COMMAND, 2)
    await batches_until(msx2, lambda batch: batch.get(ITEM) == (before + 1) % 256, after=now)
    machine = await msx2.command("machine")
    await msx2.command(f"reverse goto {now}")  # reverse is on by default; fires no watchpoint
    assert await msx2.command("machine") != machine  # a jump back restores into a new machine
    # The first report after it says so. (openMSX 20 and later replay the poke too, at its own
    # time: ITEM may well be back to before + 1 by the time the jump is checked.)
    report = await next_report(msx2)
    while not report.jumped:
        report = await next_report(msx2)
    seen = flatten(report).get(ITEM)
    assert seen is None or seen == (await msx2.read(ITEM, 1))[0] or seen == before


async def test_an_on_screen_message_arrives_verbatim_and_replaces_the_one_before(msx2: OpenMSXLink) -> None:
    await msx2.show_message("first")
    text = "player joined <&> [exit] $x { ✓"
    await msx2.show_message(text)
    assert parse_shown(await msx2.command(shown_command()))[-2:] == ["first", text]
    # One box on screen, in the top border, with the latest text: the same on every version.
    assert await msx2.command(f"osd info {MESSAGE_WIDGET}.text -text") == text
    widgets = {w for w in (await msx2.command("osd info")).split() if w.startswith(MESSAGE_WIDGET)}
    assert widgets == {MESSAGE_WIDGET, f"{MESSAGE_WIDGET}.text"}
    assert float(await msx2.command(f"osd info {MESSAGE_WIDGET} -y")) == 12


async def test_a_message_still_shows_without_openmsxs_own_osd_widgets(tmp_path: Path, openmsx: Build) -> None:
    """An openMSX whose bundled osd_widgets fail (a trimmed install): a plain box instead."""
    async with OpenMSXLink.launch(REGIONS, home=tmp_path, openmsx=openmsx.program) as link:
        await link.command("namespace eval osd_widgets {proc text_box {args} {error trimmed}}")
        await link.show_message("bob found the key")
        assert await link.command(f"osd info {MESSAGE_WIDGET}.text -text") == "bob found the key"


async def test_a_long_message_fits_one_line_on_screen_and_is_kept_whole(msx2: OpenMSXLink) -> None:
    text = "bob: " + "x" * 150
    await msx2.show_message(text)
    on_screen = await msx2.command(f"osd info {MESSAGE_WIDGET}.text -text")
    assert on_screen == text[: ON_SCREEN_CHARS - 3] + "...", on_screen
    assert parse_shown(await msx2.command(shown_command()))[-1] == text


async def test_the_players_request_from_inside_openmsx_reaches_the_link(msx2: OpenMSXLink) -> None:
    await msx2.command(request_command("resync"))
    async with asyncio.timeout(WAIT):
        async for event in msx2.events():
            if isinstance(event, Requested):
                assert event.what == "resync"
                break
        else:
            pytest.fail("events ended before the request arrived")


async def test_the_version_chooses_the_renderer(msx2: OpenMSXLink, openmsx: Build) -> None:
    assert msx2.features is not None and openmsx.features is not None
    assert msx2.features.version == openmsx.features.version
    expected = "SDL" if openmsx.features.version.major < 20 else "none"
    assert await msx2.command("set renderer") == expected


async def test_the_watcher_runs_without_a_drawing_renderer(msx2: OpenMSXLink) -> None:
    """Renderer none fires no `after frame`: the watcher's clock is emulated time."""
    renderer = await msx2.command("set renderer")
    await msx2.command("set renderer none")
    try:
        now = await msx2.emulated_time()
        await poke(msx2, COMMAND, 2)
        batches = await batches_until(msx2, lambda batch: ITEM in batch, after=now)
        assert batches[-1][ITEM] == (await msx2.read(ITEM, 1))[0]
    finally:
        await msx2.command(f"set renderer {renderer}")


async def test_a_refused_command_names_the_command(msx2: OpenMSXLink) -> None:
    with pytest.raises(CommandError, match="frobnicate"):
        await msx2.command("frobnicate 12")
    assert await msx2.command("expr {6 * 7}") == "42"  # and the link carries on


async def test_apply_reaches_the_cpu_without_echo_on_msx1(tmp_path: Path, openmsx: Build) -> None:
    tasks_before = asyncio.all_tasks()
    async with OpenMSXLink.launch(
        REGIONS, home=tmp_path, machine="C-BIOS_MSX1", cartridge=CARTRIDGE, openmsx=openmsx.program
    ) as link:
        await boot(link)
        await check_apply(link, 0x3C)
        # Flat 64 KB RAM: CPU E040 is Main RAM offset E040.
        assert await link.command("debug read {Main RAM} 0xE040") == str(0x3C)
    # Closing stopped and reaped the child (no zombie) and left no task behind.
    assert reaped(link.pid)
    assert asyncio.all_tasks() == tasks_before


async def test_a_machine_that_cannot_start_is_a_clear_error(tmp_path: Path, openmsx: Build) -> None:
    with pytest.raises(OpenMSXError, match="exited with status") as raised:
        async with OpenMSXLink.launch(
            REGIONS, home=tmp_path, machine="No_Such_Machine", openmsx=openmsx.program
        ):
            pytest.fail("openMSX started a machine that does not exist")
    assert "No_Such_Machine" in str(raised.value)


async def test_openmsx_killed_from_outside_is_an_exited_event(tmp_path: Path, openmsx: Build) -> None:
    async with OpenMSXLink.launch(
        REGIONS, home=tmp_path, cartridge=CARTRIDGE, openmsx=openmsx.program
    ) as link:
        os.kill(link.pid, signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            events = [event async for event in link.events()]
        assert events and isinstance(events[-1], Exited), events
        assert events[-1].reason == "openMSX was killed by SIGKILL"
        with pytest.raises(LinkClosed):
            await link.command("machine_info time")
    assert reaped(link.pid)  # reaped, not a zombie


@pytest.fixture
def running_openmsx(tmp_path: Path, openmsx: Build) -> Iterator[subprocess.Popen[bytes]]:
    """A player's openMSX: started without -control, the link only knows its pid. It draws, as a
    player's does: from openMSX 20 on that takes OpenGL, which SDL's offscreen driver gives
    without a display (on its dummy driver openMSX 20 crashes at start)."""
    env = dict(os.environ, OPENMSX_HOME=str(tmp_path), **HEADLESS_ENV)
    assert openmsx.features is not None
    if openmsx.features.window_renderer == "SDLGL-PP":
        env["SDL_VIDEODRIVER"] = "offscreen"
    args = [openmsx.program, "-machine", "C-BIOS_MSX2+", "-cart", str(CARTRIDGE)]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield process
    process.kill()
    process.wait()


async def wait_for_socket(pid: int) -> None:
    """openMSX listens on its control socket once started; nothing announces it."""
    socket = socket_folder(os.environ) / f"socket.{pid}"
    async with asyncio.timeout(WAIT):
        while True:
            try:
                _, writer = await asyncio.open_unix_connection(socket)
            except OSError:  # not there yet, or not listening yet
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def test_attach_watches_a_running_openmsx_and_leaves_it_running(
    running_openmsx: subprocess.Popen[bytes],
) -> None:
    await wait_for_socket(running_openmsx.pid)
    async with OpenMSXLink.attach(REGIONS, pid=running_openmsx.pid) as link:
        # (The player's renderer is theirs: here none, as openMSX starts headless.)
        await boot(link)
        now = await link.emulated_time()
        await poke(link, COMMAND, 2)
        await batches_until(link, lambda batch: ITEM in batch, after=now)
    assert running_openmsx.poll() is None  # detaching left the player's openMSX running
    async with OpenMSXLink.attach(REGIONS, pid=running_openmsx.pid) as link:
        # Attaching again works, and installing over a link that never detached (a crashed
        # peer) stops its timers: one watcher runs.
        await link.command(watch_script(REGIONS, link.run))
        await link.command("msxsync::start")
        timers = (await link.command("after info")).splitlines()
        for timer in ("frame msxsync::tick", "time 0.017 msxsync::tick_time", "realtime msxsync::poll"):
            assert sum(line.endswith(timer) for line in timers) == 1, (timer, timers)


def fake_openmsx(folder: Path, output: str, then: str) -> str:
    """An 'openMSX' that writes OUTPUT on its control channel and then runs THEN (shell)."""
    script = folder / "fake-openmsx"
    lines = ["#!/bin/sh", f"printf '%s' '{output}'", f"echo 'fake: about to {then}' >&2", then]
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("output", "then", "match"),
    [
        ('<openmsx-output><reply result="ok">12', "exit 0", "truncated"),
        ('<openmsx-output><reply result="ok">1</log>', "exec sleep 30", "malformed"),
        ('<openmsx-output><reply result="yes">1</reply>', "exec sleep 30", "result='yes'"),
    ],
)
async def test_a_broken_control_stream_is_a_clear_error_not_a_hang(
    tmp_path: Path, output: str, then: str, match: str
) -> None:
    openmsx = fake_openmsx(tmp_path, output, then)
    async with asyncio.timeout(WAIT):
        with pytest.raises(OpenMSXError, match=match) as raised:
            async with OpenMSXLink.launch(REGIONS, home=tmp_path, openmsx=openmsx):
                pytest.fail("a broken openMSX was accepted")
    assert "broken control stream" in str(raised.value)


async def test_an_openmsx_older_than_18_is_refused_in_one_sentence(tmp_path: Path) -> None:
    openmsx = fake_openmsx(
        tmp_path, '<openmsx-output><reply result="ok">openMSX 17.0</reply>', "exec sleep 30"
    )
    async with asyncio.timeout(WAIT):
        with pytest.raises(OpenMSXError) as raised:
            async with OpenMSXLink.launch(REGIONS, home=tmp_path, openmsx=openmsx):
                pytest.fail("openMSX 17 was accepted")
    assert str(raised.value) == (
        "openMSX 17.0 is too old for msxsync: it needs openMSX 18.0 or newer (openmsx.org)"
    )


def answering_openmsx(folder: Path, answers: dict[str, str]) -> str:
    """An 'openMSX' that answers each command in turn: the reply whose key starts the command
    (``ok:TEXT`` or ``nok:TEXT``), else an empty ok."""
    script = folder / "answering-openmsx"
    script.write_text(
        f"#!{sys.executable}\n"
        "import re, sys\n"
        f"answers = {answers!r}\n"
        "print('<openmsx-output>', flush=True)\n"
        "data = ''\n"
        "while chunk := sys.stdin.readline():\n"
        "    data += chunk\n"
        "    for command in re.findall(r'<command>(.*?)</command>', data):\n"
        "        answer = next((a for k, a in answers.items() if command.startswith(k)), 'ok:')\n"
        "        result, _, text = answer.partition(':')\n"
        "        print(f'<reply result=\"{result}\">{text}</reply>', flush=True)\n"
        "    data = data[data.rfind('</command>') + 10 :] if '</command>' in data else data\n"
    )
    script.chmod(0o755)
    return str(script)


async def test_a_window_without_opengl_on_openmsx_20_says_what_to_do(tmp_path: Path) -> None:
    openmsx = answering_openmsx(
        tmp_path,
        {"openmsx_info version": "ok:openMSX 21.0", "set renderer": "nok:no OpenGL context"},
    )
    async with asyncio.timeout(WAIT):
        with pytest.raises(OpenMSXError, match="needs OpenGL 2") as raised:
            async with OpenMSXLink.launch(REGIONS, home=tmp_path, openmsx=openmsx, headless=False):
                pytest.fail("a window without OpenGL was accepted")
    assert "--headless plays without one" in str(raised.value)


async def test_a_player_closing_an_attached_openmsx_is_an_exited_event(
    running_openmsx: subprocess.Popen[bytes],
) -> None:
    await wait_for_socket(running_openmsx.pid)
    async with OpenMSXLink.attach(REGIONS, pid=running_openmsx.pid) as link:
        running_openmsx.terminate()
        async with asyncio.timeout(WAIT):
            events = [event async for event in link.events()]
        assert events and isinstance(events[-1], Exited), events
        assert "closed the control connection" in events[-1].reason


async def next_report(link: OpenMSXLink) -> LocalChanges:
    async with asyncio.timeout(WAIT):
        async for event in link.events():
            if isinstance(event, LocalChanges):
                return event
    pytest.fail("events ended")


async def reports_after(link: OpenMSXLink, command: str) -> list[LocalChanges]:
    """The frame counter changes every frame: the reports made from just before COMMAND to five
    frames after it. (Without a drawing renderer openMSX services commands less often than it
    checks: several checks may fall between two commands.)"""
    last = (await link.probe([])).last_report  # (earlier reports may still be queued)
    await link.command(command)
    until = (await link.probe([])).last_report + 5
    reports: list[LocalChanges] = []
    while not reports or reports[-1].report < until:
        report = await next_report(link)
        if report.report > last:
            reports.append(report)
    return reports


async def test_loadstate_and_reverse_are_reported_as_jumps(msx2: OpenMSXLink) -> None:
    """Kept last: it moves this module's openMSX back in time."""
    assert not any(report.jumped for report in await reports_after(msx2, "savestate msxsync_link"))
    for jump in ("loadstate msxsync_link", "reverse goback 0.5", "reverse goto {back}"):
        await reports_after(msx2, "set throttle on")  # history to go back to
        back = await msx2.emulated_time() - 0.05
        machine = await msx2.command("machine")
        reports = await reports_after(msx2, jump.format(back=back))
        # Every jump back restores into a new machine. Inside a replay, openMSX 20 and later may
        # land a `reverse goto` on the next recorded event instead, ahead of now: then it plays
        # on in the same machine, the game's own writes, and no jump is reported.
        switched = await msx2.command("machine") != machine
        assert switched or jump.startswith("reverse goto"), jump
        # (One frame may still be checked between the probe and the jump.)
        jumped = [report.jumped for report in reports]
        assert jumped.count(True) == int(switched), (jump, [(r.report, r.emutime, r.jumped) for r in reports])
