"""The pure openMSX protocol: stream parser (incl. malformed/truncated input) and Tcl builders."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.definition import Region
from peer.core.emulator import openmsx_protocol as proto
from peer.core.emulator.openmsx_protocol import (
    ControlStreamError,
    ControlStreamParser,
    Log,
    Reply,
    Update,
)

STREAM = (
    b"<openmsx-output>\n"
    b'<log level="error">Could not open sequencer</log>\n'
    b'<reply result="ok">SDL</reply>\n'
    b'<reply result="nok">invalid command name &quot;frob&quot;</reply>\n'
    b'<update type="setting" machine="machine1" name="led_power">on</update>\n'
    b'<update type="setting" name="msxsync_changes">1 8.4 57344 cb</update>\n'
    b'<reply result="ok"></reply>\n'
)
EVENTS = [
    Log("error", "Could not open sequencer"),
    Reply(True, "SDL"),
    Reply(False, 'invalid command name "frob"'),
    Update("setting", "led_power", "on", "machine1"),
    Update("setting", "msxsync_changes", "1 8.4 57344 cb"),
    Reply(True, ""),
]
REGIONS = [Region(0xE000, 0xE0FF), Region(0xC000, 0xC003)]


def test_whole_stream_parses_into_events() -> None:
    parser = ControlStreamParser()
    assert parser.feed(STREAM) == EVENTS
    assert parser.feed(b"</openmsx-output>\n") == []
    assert parser.finished
    parser.close()


@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    parser = ControlStreamParser()
    bounds = [0, *sorted(cuts), len(STREAM)]
    events = []
    for begin, end in itertools.pairwise(bounds):
        events += parser.feed(STREAM[begin:end])
    assert events == EVENTS


def test_stream_ending_between_elements_is_a_plain_end() -> None:
    parser = ControlStreamParser()
    parser.feed(STREAM)
    parser.close()  # openMSX killed: no closing root tag, nothing half-sent


def test_truncated_reply_is_an_error_at_close() -> None:
    parser = ControlStreamParser()
    assert parser.feed(b'<openmsx-output><reply result="ok">12') == []
    with pytest.raises(ControlStreamError, match="truncated"):
        parser.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"<openmsx-output><reply result='ok'>a</log>", "malformed"),
        (b"<openmsx-output><reply result='maybe'>a</reply>", "result='maybe'"),
        (b"<openmsx-output><reply>a</reply>", "result=None"),
        (b"<openmsx-output><log level='chatty'>a</log>", "level"),
        (b"<openmsx-output><update name='x'>a</update>", "without type"),
        (b"<openmsx-output><reply result='ok'><b>x</b></reply>", "unexpected <b>"),
        (b"<html><body/></html>", "expected <openmsx-output>"),
        (b"\x00\xff garbage", "malformed"),
        (b"<openmsx-output></openmsx-output><reply result='ok'/>", "junk after"),
    ],
)
def test_malformed_input_is_a_clear_error(data: bytes, match: str) -> None:
    parser = ControlStreamParser()
    with pytest.raises(ControlStreamError, match=match):
        parser.feed(data)
    with pytest.raises(ControlStreamError):  # a broken stream stays broken
        parser.feed(b"<reply result='ok'/>")


def test_an_endless_element_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proto, "MAX_PENDING_BYTES", 1000)
    parser = ControlStreamParser()
    parser.feed(b"<openmsx-output><reply result='ok'>")
    with pytest.raises(ControlStreamError, match="still open"):
        for _ in range(20):
            parser.feed(b"x" * 100)


def test_unknown_elements_are_skipped() -> None:
    parser = ControlStreamParser()
    data = b"<openmsx-output><future kind='x'>y</future><reply result='ok'>1</reply>"
    assert parser.feed(data) == [Reply(True, "1")]


@given(st.binary(max_size=200))
def test_garbage_either_parses_or_raises_protocol_error(data: bytes) -> None:
    parser = ControlStreamParser()
    try:
        parser.feed(b"<openmsx-output>" + data)
        parser.close()
    except ControlStreamError:
        pass


def test_commands_are_xml_escaped() -> None:
    assert proto.encode_command("a < b && c > d") == (b"<command>a &lt; b &amp;&amp; c &gt; d</command>\n")
    with pytest.raises(ValueError, match="control characters"):
        proto.encode_command("bad\x00")


def test_message_text_travels_as_hex() -> None:
    tcl = proto.message_command("player [exit] joined $x {\n")
    hex_part = tcl.split("binary decode hex ")[1].split("]")[0]
    assert bytes.fromhex(hex_part).decode() == "player [exit] joined $x { "
    assert "[exit]" not in tcl
    with pytest.raises(ValueError):
        proto.message_command("x", level="debug")


def test_requests_come_back_only_as_the_known_words() -> None:
    assert proto.request_command("resync") == "msxsync::request resync"
    with pytest.raises(ValueError):
        proto.request_command("exit")
    run = "0123456789abcdef"
    assert proto.parse_request(f"{run} 3 resync") == proto.Request(run, 3, "resync")
    for bad in ("", f"{run} 3", f"{run} x resync", f"{run} 3 exit", "nonce 3 resync", f"{run} 3 resync x"):
        with pytest.raises(proto.ControlStreamError):
            proto.parse_request(bad)


def test_the_shown_list_decodes_every_text() -> None:
    texts = ["bob found the key", "say <b>&amp; é ✓ {", ""]
    reply = "\n".join(texts).encode().hex()
    assert proto.parse_shown(reply) == texts
    assert proto.parse_shown("") == []
    with pytest.raises(proto.ControlStreamError):
        proto.parse_shown("zz")


def test_the_watcher_has_a_clock_for_every_renderer_and_survives_machine_switches() -> None:
    tcl = proto.watch_script(REGIONS, "0123456789abcdef")
    assert "after frame msxsync::tick" in tcl  # fires only where a renderer draws
    assert f"after time {proto.TICK_S:.6f} msxsync::tick_time" in tcl  # fires with every one
    assert "after machine_switch msxsync::switched" in tcl


def test_apply_command_addresses_regions_by_index_and_offset() -> None:
    tcl = proto.apply_command(REGIONS, [(0xE040, b"\x99\x98"), (0xC003, b"\x01")])
    assert tcl == "msxsync::apply {0 64 9998 1 3 01} {} -1"


def test_counter_deltas_travel_as_numbers_with_their_shape() -> None:
    tcl = proto.apply_command(REGIONS, [], [proto.CounterDelta(0xE010, 2, True, -7)])
    assert tcl == "msxsync::apply {} {0 16 2 1 -7} -1"
    with pytest.raises(ValueError):
        proto.apply_command(REGIONS, [], [proto.CounterDelta(0xE0FF, 2, False, 1)])  # leaves region
    with pytest.raises(ValueError):
        proto.CounterDelta(0xE010, 3, False, 1)


@pytest.mark.parametrize(
    "changes",
    [
        [(0xE0FF, b"\x01\x02")],  # runs past the region's end
        [(0xD000, b"\x01")],  # in no region
        [(-1, b"\x01")],
        [(0xE000, b"")],
        [],
    ],
)
def test_apply_command_refuses_bytes_outside_the_regions(changes: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError):
        proto.apply_command(REGIONS, changes)


def test_apply_command_refuses_non_int_addresses() -> None:
    with pytest.raises(TypeError):
        proto.apply_command(REGIONS, [("0xE000; exit", b"\x01")])  # type: ignore[list-item]


def test_read_command_is_bounded() -> None:
    assert proto.read_command(0xE000, 16) == "binary encode hex [debug read_block memory 57344 16]"
    with pytest.raises(ValueError):
        proto.read_command(0xFFFF, 2)
    assert proto.decode_hex_reply("00ff", 2) == b"\x00\xff"
    with pytest.raises(ControlStreamError):
        proto.decode_hex_reply("00f", 2)
    with pytest.raises(ControlStreamError):
        proto.decode_hex_reply("zz", 1)


RUN = "0123456789abcdef"


def test_watch_script_names_the_regions_and_its_run() -> None:
    tcl = proto.watch_script(REGIONS, RUN)
    assert "variable regions {57344 256 49152 4}" in tcl
    assert f'"{RUN} $seq ' in tcl
    with pytest.raises(ValueError):
        proto.watch_script([], RUN)
    for bad in ("", "0123", "x" * 16, RUN + "\n", "[exit] " + RUN):
        with pytest.raises(ValueError, match="nonce"):
            proto.watch_script(REGIONS, bad)


def test_run_nonces_are_hex_of_enough_random_bytes() -> None:
    assert proto.new_run_nonce(bytes(range(8))) == "0001020304050607"
    with pytest.raises(ValueError):
        proto.new_run_nonce(b"1234")


def test_change_reports_decode() -> None:
    report = proto.parse_changes(f"{RUN} 7 8.25 1700000000123456 0 57344 cb 00 57360 3031 2020")
    assert report == proto.ChangeReport(
        RUN,
        7,
        8.25,
        1700000000.123456,
        ((0xE000, b"\xcb"), (0xE010, b"01")),
        ((0xE000, b"\x00"), (0xE010, b"  ")),
    )
    assert not report.jumped
    assert proto.parse_changes(f"{RUN} 8 2.5 1700000000123456 1 57344 00 cb").jumped
    # A jump that changed none of the regions is still reported, with no changes.
    quiet_jump = proto.parse_changes(f"{RUN} 9 2.5 1700000000123456 1")
    assert quiet_jump.jumped and quiet_jump.changes == () and quiet_jump.seq == 9


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"{RUN} 1 2.0",
        f"{RUN} 1 2.0 5",
        f"{RUN} 1 2.0 5 0",  # no changes and no jump: nothing to report
        f"{RUN} 1 2.0 5 0 57344",
        f"{RUN} x 2.0 5 0 1 00 00",
        f"{RUN} 1 2.0 5 0 1 0 0",
        f"{RUN} 1 2.0 5 0 1 00",
        f"{RUN} 1 2.0 5 0 1 00 0000",
        f"{RUN} 1 2.0 5 0 65535 0000 0000",
        f"{RUN} 1 2 5 0 -1 00 00",
        f"{RUN} 1 nan 5 0 1 00 00",
        f"{RUN} 1 -1 5 0 1 00 00",
        f"{RUN} 1 2.0 -5 0 1 00 00",
        f"{RUN} 1 2.0 5 2 1 00 00",  # the jump flag is 0 or 1
        f"{RUN} 1 2.0 5 01 1 00 00",
        f"{RUN} 1 2.0 5 1 00 00",  # the format before jump flags
        "1 2.0 57344 cb",  # the format before run nonces: what an old settings.xml holds
        "zzzzzzzzzzzzzzzz 1 2.0 5 0 1 00 00",
    ],
)
def test_bad_change_reports_are_protocol_errors(value: str) -> None:
    with pytest.raises(ControlStreamError):
        proto.parse_changes(value)


def test_probe_reads_time_report_count_and_bytes_in_one_command() -> None:
    assert proto.probe_command([0xE000, 0xE001]) == (
        "list [machine_info time] $::msxsync::seq "
        "[binary encode hex [debug read_block memory 57344 1]] "
        "[binary encode hex [debug read_block memory 57345 1]]"
    )
    assert proto.parse_probe("7.5 12 01 ff", [0xE000, 0xE001]) == proto.Probe(
        7.5, 12, {0xE000: 1, 0xE001: 0xFF}
    )
    assert proto.parse_probe("0.25 0", []) == proto.Probe(0.25, 0, {})
    for bad in ("7.5 12 01", "7.5 x 01 ff", "nan 1 01 ff", "1 -1 01 ff", "1 1 0g ff", "1 1 01 ff 00"):
        with pytest.raises(ControlStreamError):
            proto.parse_probe(bad, [0xE000, 0xE001])
    with pytest.raises(ValueError):
        proto.probe_command([0x10000])
