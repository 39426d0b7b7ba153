"""The openMSX link: run or attach to openMSX, report shared-byte changes, apply remote ones.

Public surface::

    async with OpenMSXLink.launch(regions, home=state / "openmsx-home", machine="C-BIOS_MSX2+",
                                  cartridge=rom, romtype=None, openmsx="openmsx",
                                  scripts=[...], headless=True, extra_args=()) as link:
        # or: async with OpenMSXLink.attach(regions, pid=None) as link:
        async for event in link.events():   # LocalChanges | Logged | Requested | Exited
            ...
        await link.apply([(0xE075, b"\\x01")])  # -> addresses that did not take (normally ())
        await link.read(0xE000, 16)             # bytes as the CPU sees them
        await link.show_message("player joined")
        await link.emulated_time()              # seconds, for --arm-after
        await link.command("set throttle off")  # low level Tcl; CommandError names the command

Design, and why:

* **Watching = a Tcl read of the regions at the end of every emulated frame, no watchpoints.**
  A Tcl proc re-armed with ``after frame`` (and, where no renderer draws frames, as headless
  openMSX 20 does not, with ``after time`` every 60 Hz frame of emulated time) reads each region
  with ``debug read_block memory``
  (hex), compares it with the snapshot of the previous check and reports only the bytes that
  differ. This sees *every* change, whatever made it: the game, ``loadstate``, ``reverse
  goback`` (on by default), other tools, which write_mem watchpoints do not (they fire neither
  on loadstate nor on reverse, nor for writes to ``{Main RAM}``). It never reports an unchanged
  rewrite, which watchpoints do on every write (a game rewriting a value each frame would cost
  50 events/s for nothing). Writes within one frame coalesce into one batch with final values.
  ``after frame`` fires for every drawn frame, also with throttle off, and survives loadstate
  and reverse; emulated time runs with every renderer, but loadstate and reverse drop ``after
  time`` timers with their machine, so an ``after machine_switch`` hook re-arms it (checked on
  openMSX 18, 20 and 21). Two limits keep the cost down and nothing stuck:
  checks are at least 4 ms of real time apart (every frame at normal speed; with throttle off,
  hundreds of times faster, frames share a check: a quiet check costs ~3 us, which at 20,000
  frames/s would be 6% of the emulation), and a 50 ms ``after realtime`` poll checks when frames
  do not come (paused emulation, a pending skipped check, renderer none). openMSX handles frame
  events between slices of emulation, so on a loaded machine one check can also cover two
  frames: still at most one batch per frame, only intermediate values go unseen.
  A check also notes the active machine and the emulated time: loadstate and reverse restore
  into a new machine, so the report of a check after one says it *jumped* and the peer re-takes
  the room's bytes instead of publishing the jump's (`peer.core.emulator.openmsx_protocol.JUMP_DETECTION`).
* **Events leave Tcl as a user_setting update** (``msxsync_changes``, enabled with
  ``openmsx_update enable setting``). It arrives on the control channel in order with the
  replies, in both launch and attach mode (stderr is not ours when attached), and is invisible
  to the player, whereas ``message`` also pops up on the OSD. Each value starts with a sequence
  number, so two equal batches are still two updates.
* **Applying** runs one Tcl command that writes through ``debug write_block memory`` and puts
  what reads back into the watcher's snapshot, so no applied byte is echoed as a local change;
  local changes made earlier in the same frame are still reported (only the written bytes are
  touched in the snapshot). Writing through the CPU view maps the address through the current
  slot selection and memory mapper exactly as the game's own ``LD (HL),A`` would, so it reaches
  RAM at 0xE000 on a flat 64 KB MSX1 and mapper segment 0 on an MSX2+ alike, and watching reads
  through the same view. The limit: a region is only meaningful where the game keeps RAM mapped
  (page 3 in practice, where the stack lives). If the game maps ROM there at the moment of a
  write, the write does not take; `apply` returns those addresses so the peer can retry. If the
  game switches a mapper segment into a shared page, the watcher sees the other segment's bytes
  as changes: define regions only where the game keeps its variables mapped.
* **Versions**: the link asks ``openmsx_info version`` first and refuses one older than 18.0 in
  one sentence; the version picks the renderer (`peer.core.emulator.openmsx_versions`). **Headless** is
  the SDL renderer on SDL's dummy drivers on 18, and renderer ``none`` from 20 on (where SDL is
  gone and the only drawing renderer needs OpenGL), which services commands less often.
* **Messages** are msxsync's own one-line box in the top border, the same on every version
  (18's ``message`` stacks on the OSD, 20's in ImGui). F10 asks for a resync through a second
  user_setting (``msxsync_request``), which reaches the session as `Requested`.
* **One link per openMSX**: the Tcl lives in one namespace; a second link (or a peer that
  crashed without detaching) is replaced, its timers stopped, when a link installs its own.
* **Events** go to one consumer through an unbounded queue; the 4 ms gap bounds it to ~250
  batches per second even with throttle off, plus openMSX's own log lines (`Logged`).
* **Lifecycle**: each launched openMSX gets its own OPENMSX_HOME; leaving `launch` stops the
  child (``exit``, SIGTERM, SIGKILL, always reaped), leaving `attach` removes our Tcl and leaves
  openMSX running. If openMSX goes away on its own, `events()` yields `Exited` with the reason
  (exit status or signal) and openMSX's last stderr lines, then ends; commands raise
  `LinkClosed`. The reading tasks live in one TaskGroup owned by the context manager. Should
  msxsync die without leaving `launch` (kill -9, a crash), openMSX quits too: Linux signals it
  (PR_SET_PDEATHSIG), and on every system the tether does (`peer.openmsx.tether`).
* **Attach** reaches openMSX's UNIX socket, or on Windows its TCP port with the SSPI exchange
  it asks for (`peer.openmsx.control_socket`).
"""

from peer.openmsx.control import CommandError, LinkClosed, OpenMSXError
from peer.openmsx.events import Exited, LinkEvent, LocalChanges, Logged, Requested
from peer.openmsx.link import OpenMSXLink

__all__ = [
    "CommandError",
    "Exited",
    "LinkClosed",
    "LinkEvent",
    "LocalChanges",
    "Logged",
    "OpenMSXError",
    "OpenMSXLink",
    "Requested",
]
