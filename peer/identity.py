"""The player's identity: an Ed25519 key kept in the state folder, readable only by its owner.

The key signs every write this player makes and proves who they are to the rendezvous and to the
other peers. It is created on first start (written atomically with mode 0600) and loaded after that;
a file that is not a key is refused with a clear message instead of being silently replaced,
because replacing it would make this player a stranger to their own rooms.
"""

from __future__ import annotations

import os
from pathlib import Path

from nacl.signing import SigningKey

KEY_FILE = "identity.key"
_HEADER = b"msxsync-ed25519-v1\n"


class IdentityError(RuntimeError):
    pass


def default_state_dir() -> Path:
    """`$XDG_DATA_HOME/msxsync`, else `~/.local/share/msxsync` (the platform's user data folder)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "msxsync"


def load_or_create(state_dir: Path) -> SigningKey:
    path = state_dir / KEY_FILE
    if path.exists():
        return _load(path)
    state_dir.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_HEADER + bytes(key).hex().encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return key


def _load(path: Path) -> SigningKey:
    data = path.read_bytes()
    if not data.startswith(_HEADER):
        raise IdentityError(f"{path} is not an msxsync identity key; move it away to create a new one")
    try:
        seed = bytes.fromhex(data[len(_HEADER) :].decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise IdentityError(f"{path} is damaged; move it away to create a new identity") from None
    if len(seed) != 32:
        raise IdentityError(f"{path} is damaged; move it away to create a new identity")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # others must never read a signing key
    return SigningKey(seed)
