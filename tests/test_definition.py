"""The .regions parser: the original format unchanged, the #! extension, every error with its line."""

import pytest

from games.definition import (
    ArmedClause,
    Comparison,
    DefinitionError,
    Merge,
    MergeRule,
    Region,
    parse_definition,
)

ORIGINAL = """galious.rom
# The Maze of Galious, as openmsx-sync shipped it
e075 e099 items

e063 e06c world items and more words
0xE046 0xE04B arrows coins keys
"""


def test_original_format_parses_unchanged():
    definition = parse_definition(ORIGINAL, "galious")
    assert definition.rom_file == "galious.rom"
    assert [(r.start, r.end) for r in definition.regions] == [
        (0xE046, 0xE04B),
        (0xE063, 0xE06C),
        (0xE075, 0xE099),
    ]
    assert definition.regions[1].comment == "world items and more words"
    assert definition.title == "" and definition.machine is None and definition.armed_when is None
    assert definition.shared_size == 6 + 10 + 37


EXTENDED = """demo.rom
#! msxsync 1
#! title Demo: a co-op test
#! machine C-BIOS_MSX1
#! romtype ASCII16
#! sha1 4D51D3C5036311392B173A576BC7D91DC9FED6CB GoodMSX dump, Konami mapper
#! armed-when e000 == 01 and e001 & 80 != 00
#! merge lww
e010 e01f inventory
#! some-future-directive value kept
"""


def test_extension_directives():
    definition = parse_definition(EXTENDED, "demo")
    assert definition.title == "Demo: a co-op test"
    assert definition.machine == "C-BIOS_MSX1"
    assert definition.romtype == "ASCII16"
    assert definition.known_roms[0].sha1 == "4d51d3c5036311392b173a576bc7d91dc9fed6cb"
    assert definition.known_roms[0].remark == "GoodMSX dump, Konami mapper"
    assert definition.accepts_sha1("4D51D3C5036311392B173A576BC7D91DC9FED6CB")
    assert definition.regions == (Region(0xE010, 0xE01F, Merge(MergeRule.LWW), "inventory"),)
    armed = definition.armed_when
    assert armed is not None
    assert armed.clauses == (
        ArmedClause(0xE000, Comparison.EQ, 0x01),
        ArmedClause(0xE001, Comparison.NE, 0x00, mask=0x80),
    )
    assert armed.addresses == (0xE000, 0xE001)
    assert armed.holds({0xE000: 1, 0xE001: 0x81})
    assert not armed.holds({0xE000: 1, 0xE001: 0x7F})
    assert not armed.holds({0xE000: 2, 0xE001: 0x80})
    assert definition.extra == (("some-future-directive", "value kept"),)
    assert str(armed) == "e000 == 01 and e001 & 80 != 00"


def test_extended_file_is_plain_comments_to_the_old_reader():
    """An old reader skips every '#' line: the extension must hide entirely behind them."""
    old_view = [line for line in EXTENDED.splitlines()[1:] if line and not line.startswith("#")]
    assert old_view == ["e010 e01f inventory"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "first line must name the ROM"),
        ("# comment\n", 1, "not be a comment"),
        ("../etc/passwd\ne000 e001\n", 1, "plain file name"),
        ("g.rom\n\n", 2, "no regions"),
        ("g.rom\ne000\n", 2, "needs a hex start and end"),
        ("g.rom\nzz00 e001\n", 2, "'zz00' is not a hex number"),
        ("g.rom\ne000 e0g1\n", 2, "'e0g1' is not a hex number"),
        ("g.rom\n# x\ne001 e000 reversed\n", 3, "reversed"),
        ("g.rom\ne000 10000\n", 2, "above ffff"),
        ("g.rom\ne000 e00f\ne008 e010\n", 3, "overlaps"),
        ("g.rom\ne008 e010\n\ne000 e008\n", 4, "overlaps"),
        ("g.rom\n#! merge add le16\ne000 e002\n", 3, "not a whole number of 2-byte counters"),
        ("g.rom\n#! merge max le16\ne000 e001\n", 2, "takes no options"),
        ("g.rom\n#! merge add le24\ne000 e001\n", 2, "unknown or repeated merge option"),
        ("g.rom\n#! merge add bcd bcd\ne000 e001\n", 2, "unknown or repeated merge option"),
        ("g.rom\n#! merge nonsense\ne000 e001\n", 2, "unknown merge rule"),
        ("g.rom\n#! sha1 1234\ne000 e001\n", 2, "not a SHA-1"),
        ("g.rom\n#! armed-when e000 = 01\ne000 e001\n", 2, "unknown comparison"),
        ("g.rom\n#! armed-when e000 ==\ne000 e001\n", 2, "ADDR [& MASK] OP VALUE"),
        ("g.rom\n#! armed-when e000 == 100\ne000 e001\n", 2, "above ff"),
        ("g.rom\n#! title\ne000 e001\n", 2, "needs a value"),
        ("g.rom\n#! machine A\n#! machine B\ne000 e001\n", 3, "given twice"),
        ("g.rom\n#! machine A;rm\ne000 e001\n", 2, "unexpected characters"),
        ("g.rom\n#! msxsync 2\ne000 e001\n", 2, "newer than this msxsync"),
    ],
)
def test_errors_name_file_and_line(text, line, reason):
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "g", source="games/g.regions")
    assert caught.value.line == line
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"games/g.regions:{line}: ")


def test_region_values_are_validated_on_construction():
    with pytest.raises(ValueError):
        Region(0x10, 0x0F)
    with pytest.raises(ValueError):
        Region(0, 0x10000)


def test_to_json_round_trips_the_essentials():
    data = parse_definition(EXTENDED, "demo").to_json()
    assert data["regions"] == [{"start": 0xE010, "end": 0xE01F, "merge": "lww", "comment": "inventory"}]
    assert data["armed_when"] == "e000 == 01 and e001 & 80 != 00"
    assert data["machine"] == "C-BIOS_MSX1"


def test_json_round_trip_goes_through_the_same_checks():
    from games.definition import definition_from_json

    original = parse_definition(EXTENDED, "demo")
    again = definition_from_json(original.to_json(), "demo")
    assert again.regions == original.regions
    assert again.armed_when == original.armed_when
    assert again.known_roms == original.known_roms
    assert again.machine == original.machine and again.title == original.title


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.update(title="x\ne000 e0ff sneaky"),
        lambda d: d.update(title="x\u2028e100 e1ff sneaky"),  # (str.splitlines breaks there too)
        lambda d: d.update(title="x\x1ce100 e1ff sneaky"),
        lambda d: d.update(title="x\x85e100 e1ff sneaky"),
        lambda d: d.update(regions=[{"start": "e000", "end": 1}]),
        lambda d: d.update(regions=[{"start": 0xE001, "end": 0xE000}]),
        lambda d: d.update(regions="nope"),
        lambda d: d.update(known_roms=[{"sha1": "12"}]),
        lambda d: d.update(rom_file="../../etc/passwd"),
        lambda d: d.pop("rom_file"),
        lambda d: d.update(armed_when="e000 ?? 1"),
    ],
)
def test_json_from_a_server_is_validated(mangle):
    from games.definition import definition_from_json

    data = parse_definition(EXTENDED, "demo").to_json()
    mangle(data)
    with pytest.raises(DefinitionError):
        definition_from_json(data, "demo")


def test_old_comments_starting_with_hash_bang_stay_comments():
    definition = parse_definition("g.rom\n#!important: keep e000 private\ne010 e017 x\n", "g")
    assert [(r.start, r.end) for r in definition.regions] == [(0xE010, 0xE017)]
    assert definition.extra == ()


def test_tabs_separate_words_and_a_byte_order_mark_is_ignored():
    text = "\ufeffg.rom\n#!\tsha1\t4d51d3c5036311392b173a576bc7d91dc9fed6cb\tGoodMSX\ne010\te017\n"
    definition = parse_definition(text, "g")
    assert definition.rom_file == "g.rom"
    assert definition.known_roms[0].remark == "GoodMSX"


@pytest.mark.parametrize(
    ("text", "merge"),
    [
        ("lww", Merge()),
        ("max", Merge(MergeRule.MAX)),
        ("min", Merge(MergeRule.MIN)),
        ("bit-or", Merge(MergeRule.BIT_OR)),
        ("bit-and", Merge(MergeRule.BIT_AND)),
        ("add", Merge(MergeRule.ADD)),
        ("add bcd", Merge(MergeRule.ADD, 1, True)),
        ("add le16 bcd", Merge(MergeRule.ADD, 2, True)),
        ("add le32", Merge(MergeRule.ADD, 4, False)),
    ],
)
def test_merge_rules_parse_and_round_trip_through_json(text, merge):
    from games.definition import definition_from_json

    definition = parse_definition(
        f"g.rom\n#! merge {text}\ne000 e007 eight bytes\n#! merge lww\ne010 e010\n", "g"
    )
    assert definition.regions[0].merge == merge
    assert definition.regions[1].merge == Merge()
    assert str(merge) == text
    assert definition_from_json(definition.to_json(), "g").regions == definition.regions
