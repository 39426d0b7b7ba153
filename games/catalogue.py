"""Reading game folders from disk: definitions plus the ROMs a host happens to have.

This is the I/O edge of `games.definition`. A broken definition never stops the others from
loading: it is reported in `Catalogue.problems` with its file and line. ROM paths come only from
the definition's plain file name inside its own folder, never from outside input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from games.definition import DefinitionError, GameDefinition, is_valid_game_name, parse_definition

MAX_ROM_SIZE = 4 * 1024 * 1024  # the largest MSX megaROMs are 2 MiB; leave room, refuse junk


@dataclass(frozen=True, slots=True)
class RomFile:
    path: Path
    size: int
    sha1: str
    sha256: str


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    definition: GameDefinition
    folder: Path
    rom: RomFile | None

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(slots=True)
class Catalogue:
    entries: dict[str, CatalogueEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, name: str) -> CatalogueEntry | None:
        return self.entries.get(name)


def bundled_games_dir() -> Path:
    """The folder holding the games shipped inside the installed package."""
    return Path(str(resources.files("games")))


def hash_rom(path: Path) -> RomFile:
    data = path.read_bytes()
    return RomFile(
        path=path,
        size=len(data),
        sha1=hashlib.sha1(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def load_catalogue(folders: list[Path]) -> Catalogue:
    """Load every `*.regions` in `folders`; an earlier folder wins when names collide."""
    catalogue = Catalogue()
    for folder in folders:
        if not folder.is_dir():
            catalogue.problems.append(f"{folder}: not a folder, skipped")
            continue
        for path in sorted(folder.glob("*.regions")):
            _load_one(catalogue, path)
    return catalogue


def _load_one(catalogue: Catalogue, path: Path) -> None:
    name = path.stem
    if not is_valid_game_name(name):
        catalogue.problems.append(f"{path}: file name is not a valid game name, skipped")
        return
    if name in catalogue.entries:
        return
    try:
        text = path.read_text(encoding="utf-8")
        definition = parse_definition(text, name, source=str(path))
    except DefinitionError as exc:
        catalogue.problems.append(f"{exc}; skipped")
        return
    except (OSError, UnicodeDecodeError) as exc:
        catalogue.problems.append(f"{path}: cannot read ({exc}); skipped")
        return
    catalogue.entries[name] = CatalogueEntry(definition, path.parent, _find_rom(catalogue, path))


def _find_rom(catalogue: Catalogue, regions_path: Path) -> RomFile | None:
    text = regions_path.read_text(encoding="utf-8")
    rom_path = regions_path.parent / text.splitlines()[0].strip()
    if not rom_path.is_file():
        return None
    if rom_path.stat().st_size > MAX_ROM_SIZE:
        catalogue.problems.append(f"{rom_path}: larger than {MAX_ROM_SIZE} bytes, not served")
        return None
    return hash_rom(rom_path)
