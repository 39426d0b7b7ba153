"""Named items: the `item`/`counter` directives (strict, with line numbers) and the sentences a
player reads when another player's write changes a named byte."""

from __future__ import annotations

import pytest

from games.definition import (
    DefinitionError,
    GameDefinition,
    Merge,
    MergeRule,
    Region,
    definition_from_json,
    parse_definition,
)
from games.named import NamedCounter, NamedItem
from peer.core.room.items import ItemNews, counter_runs, sentences, writer_of
from peer.core.sync.state import Contribution, Layout, SharedState

BASE = "g.rom\n#! title g\ne010 e01f bag\ne046 e04b counters\n"


def parse(lines: str) -> GameDefinition:
    return parse_definition(BASE + lines, "g")


def test_items_bits_and_counters_parse():
    definition = parse(
        "#! item e010 key\n#! item e011.7 silver key\n#! item e011.0 bread and water\n"
        "#! counter e018 bcd coins\n#! counter e046-e047 binary arrows\n"
    )
    assert definition.items == (
        NamedItem(0xE010, "key"),
        NamedItem(0xE011, "silver key", 7),
        NamedItem(0xE011, "bread and water", 0),
    )
    assert definition.counters == (
        NamedCounter(0xE018, 0xE018, "coins", True),
        NamedCounter(0xE046, 0xE047, "arrows", False),
    )
    assert definition_from_json(definition.to_json(), "g") == definition


def test_names_are_comments_to_an_old_reader():
    text = BASE + "#! item e010 key\n#! counter e018 bcd coins\n"
    old_view = [line for line in text.splitlines()[1:] if line and not line.startswith("#")]
    assert old_view == ["e010 e01f bag", "e046 e04b counters"]


def test_json_from_an_older_rendezvous_has_no_names():
    data = parse("#! item e010 key\n").to_json()
    del data["items"], data["counters"]
    assert definition_from_json(data, "g").items == ()


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        ("#! item e010\n", 5, "needs ADDR[.BIT] NAME"),
        ("#! item e0z0 key\n", 5, "not a hex address"),
        ("#! item e010.8 key\n", 5, "bit 0-7"),
        ("#! item e030 key\n", 5, "not inside one shared region"),
        ("#! item e010 key\n#! item e010 gem\n", 6, "e010 is named twice"),
        ("#! item e010.1 key\n#! item e010 gem\n", 6, "e010 is named twice"),
        ("#! item e010 key\n#! item e010.1 gem\n", 6, "e010 is named twice"),
        ("#! item e010 key\n#! counter e00f-e010 bcd coins\n", 6, "not inside one shared region"),
        ("#! item e010 {evil}\n", 5, "must be 1-32 letters"),
        ("#! item e010 " + "x" * 33 + "\n", 5, "must be 1-32 letters"),
        ("#! counter e018 hex coins\n", 5, "encoding 'hex'"),
        ("#! counter e018 bcd\n", 5, "needs ADDR[-END]"),
        ("#! counter e046-e04b bcd coins\n", 5, "at most 4 bytes"),
        ("#! counter e047-e046 bcd coins\n", 5, "not a range"),
        ("#! counter e018 bcd coins\n#! item e018 coin\n", 6, "e018 is named twice"),
    ],
)
def test_naming_errors_name_the_line(lines: str, line: int, reason: str):
    with pytest.raises(DefinitionError) as error:
        parse(lines)
    assert error.value.line == line, error.value
    assert reason in error.value.reason, error.value


def test_bundled_games_name_their_bytes():
    from games.catalogue import bundled_games_dir

    demo = parse_definition((bundled_games_dir() / "demo.regions").read_text(), "demo")
    assert [item.name for item in demo.items][:2] == ["key", "gem"]
    assert demo.counters == (NamedCounter(0xE018, 0xE018, "coins", True),)
    galious = parse_definition((bundled_games_dir() / "galious.regions").read_text(), "galious")
    assert {c.name: (c.start, c.end) for c in galious.counters} == {
        "arrows": (0xE046, 0xE047),
        "coins": (0xE048, 0xE049),
        "keys": (0xE04A, 0xE04B),
    }
    assert NamedItem(0xE07A, "cross") in galious.items


ITEMS = (NamedItem(0xE010, "key"), NamedItem(0xE011, "silver key", 7))
COUNTERS = (NamedCounter(0xE018, 0xE018, "coins", True), NamedCounter(0xE046, 0xE047, "arrows", True))


def who(address: int) -> str:
    return "player2"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({0xE010: 0}, {0xE010: 1}, ["player2 found the key"]),
        ({0xE010: 1}, {0xE010: 0}, ["player2 lost the key"]),
        ({0xE010: 1}, {0xE010: 5}, []),  # still held
        ({}, {0xE010: 1}, []),  # first sight: no news
        ({0xE011: 0x01}, {0xE011: 0x81}, ["player2 found the silver key"]),
        ({0xE011: 0x81}, {0xE011: 0x80}, []),  # another bit
        ({0xE018: 0x11}, {0xE018: 0x12}, ["player2: coins 12"]),
        ({0xE046: 0x99, 0xE047: 0x00}, {0xE047: 0x01}, ["player2: arrows 199"]),
        ({0xE046: 0x99}, {0xE047: 0x01}, []),  # half a counter never seen
        ({0xE018: 0x12}, {0xE018: 0x1A}, ["player2: coins 1a"]),  # not BCD: shown as it is
    ],
)
def test_sentences(before: dict[int, int], after: dict[int, int], expected: list[str]):
    assert sentences(ITEMS, COUNTERS, before, after, who) == expected


def test_news_only_for_remote_changes_after_the_first_sight():
    news = ItemNews(ITEMS, COUNTERS)
    assert news.remote([(0xE010, b"\x01")], who) == []  # first sight (joining the room)
    assert news.remote([(0xE010, b"\x00")], who) == ["player2 lost the key"]
    news.seen([(0xE010, b"\x01\x00")])  # our own game picked it up: the game shows that itself
    assert news.remote([(0xE010, b"\x01\x80")], who) == ["player2 found the silver key"]
    assert news.remote([(0xE012, b"\x01")], who) == []  # not named


def test_the_room_state_gives_named_values_counters_and_writers():
    layout = Layout([Region(0xE010, 0xE011), Region(0xE018, 0xE018, Merge(MergeRule.ADD, 1, True))])
    state = SharedState(layout)
    alice = b"\x0a" * 32
    state.apply(0xE010, b"\x01", lamport=5, writer=alice)
    state.contribute(Contribution(0xE018, lamport=6, writer=alice, session=1, total=12))  # shown in BCD
    assert writer_of(state, 0xE010) == alice
    assert counter_runs(state) == [(0xE018, b"\x12")]
    assert counter_runs(state, []) == []
    news = ItemNews(ITEMS, COUNTERS)
    news.seen_in(state)  # joining: the room's items are no news ...
    assert news.remote([(0xE010, b"\x01")], who) == []
    assert news.remote([(0xE010, b"\x00")], who) == ["player2 lost the key"]  # ... their changes are


def test_before_our_game_shares_what_arrives_is_the_rooms_state_not_news():
    news = ItemNews(ITEMS, COUNTERS)
    news.seen([(0xE010, b"\x00")])
    assert news.remote([(0xE010, b"\x01")], who, sharing=False) == []  # adopted, not news
    assert news.remote([(0xE010, b"\x00")], who) == ["player2 lost the key"]  # remembered as held
