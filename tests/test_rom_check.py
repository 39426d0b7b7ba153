"""A ROM is accepted by hash only: known dumps pass, others need --force-rom, junk is refused."""

import hashlib

import pytest

from games.definition import parse_definition
from peer.rom import GameError, cache_path, check_rom, local_rom, store_in_cache

ROM = b"AB" + bytes(16382)
DEFINITION = parse_definition(
    f"g.rom\n#! title Game\n#! sha1 {hashlib.sha1(ROM).hexdigest()} test dump\ne000 e001\n", "g"
)


def test_known_dump_is_accepted():
    assert check_rom(ROM, DEFINITION, force=False, origin="x") == hashlib.sha1(ROM).hexdigest()


def test_unknown_dump_needs_force_and_the_message_says_so():
    with pytest.raises(GameError, match="--force-rom"):
        check_rom(ROM + b"x", DEFINITION, force=False, origin="mine.rom")
    assert check_rom(ROM + b"x", DEFINITION, force=True, origin="mine.rom")


def test_empty_and_huge_files_are_refused_even_with_force():
    with pytest.raises(GameError, match="empty"):
        check_rom(b"", DEFINITION, force=True, origin="x")
    with pytest.raises(GameError, match="too large"):
        check_rom(bytes(5 * 1024 * 1024), DEFINITION, force=True, origin="x")


def test_missing_file_is_one_clear_sentence(tmp_path):
    with pytest.raises(GameError, match="cannot read the ROM"):
        local_rom(tmp_path / "nope.rom", DEFINITION, force=False)


def test_cache_is_named_by_our_own_hash(tmp_path):
    sha1 = hashlib.sha1(ROM).hexdigest()
    path = store_in_cache(tmp_path, ROM, sha1)
    assert path == cache_path(tmp_path, sha1) and path.read_bytes() == ROM
