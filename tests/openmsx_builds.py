"""The openMSX programs the tests run against, as one parameter: `openmsx`.

Players run openMSX 18 (Debian 12) to 21 and newer, so every test that starts openMSX asks for
the `openmsx` fixture and runs once per build found:

* ``18``: Debian's ``openmsx`` on PATH (`scripts/setup` installs it);
* ``20`` and ``21``: the builds from openMSX's source in ``../shared/openmsx/`` beside the clone
  (what CI has; `scripts/setup --test` installs the libraries they need).

``MSXSYNC_OPENMSX=PROGRAM[,PROGRAM...]`` replaces that list (each labelled by the version it
reports). A build that is missing, or cannot start, makes its tests skip, saying why.

Every test that asks for `openmsx` runs on every build found: the openMSX tests of the three
builds take about 2 minutes each on a 2-core machine, so no subset is needed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from peer.core.emulator.openmsx_versions import Features, UnsupportedOpenMSX, features_for, parse_version

ROOT = Path(__file__).resolve().parent.parent
SHARED_BUILDS = ROOT.parent / "shared" / "openmsx"
LABELS = ("18", "20", "21")


@dataclass(frozen=True)
class Build:
    """One openMSX program, what it is, and why it cannot be used (None: it can)."""

    label: str
    program: str
    features: Features | None = None
    missing: str | None = None

    @property
    def id(self) -> str:
        return f"openmsx{self.label}"


def _probe(label: str, program: str) -> Build:
    found = shutil.which(program) if os.sep not in program else program
    if found is None or not Path(found).exists():
        return Build(label, program, missing=f"openMSX {label} is not installed ({program} not found)")
    try:
        done = subprocess.run([found, "-v"], capture_output=True, text=True, timeout=20, check=False)
        features = features_for(parse_version(done.stdout))
    except (OSError, subprocess.TimeoutExpired, UnsupportedOpenMSX) as error:
        return Build(label, program, missing=f"{program} cannot run: {error}")
    if done.returncode != 0:
        return Build(label, program, missing=f"{program} cannot run: {done.stderr.strip()[:200]}")
    return Build(str(features.version.major), found, features)


@functools.cache
def builds() -> tuple[Build, ...]:
    """Every build the tests may use, in version order (missing ones say why)."""
    chosen = os.environ.get("MSXSYNC_OPENMSX")
    if chosen:
        return tuple(_probe(str(n), program.strip()) for n, program in enumerate(chosen.split(",")))
    return (
        _probe("18", "openmsx"),
        _probe("20", str(SHARED_BUILDS / "20.0" / "openmsx")),
        _probe("21", str(SHARED_BUILDS / "21.0" / "openmsx")),
    )


def by_label(label: str) -> Build:
    """The build labelled LABEL ("18", "21"...): for a test that mixes versions."""
    for build in builds():
        if build.label == label:
            return build
    return Build(label, "?", missing=f"no openMSX {label} among the builds")
