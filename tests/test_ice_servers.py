"""ICE servers from the rendezvous (protocol 2; TURN only for members since 4): TURN credentials in
coturn's shared-secret scheme, the secret file, `ice_servers` as the server builds them and as the
client judges them, and the rendezvous flags that configure them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from peer.core.room.signalling import IceServer, parse_ice_servers
from peer.mesh.webrtc import IceOptions
from rendezvous import cli, ice
from tests.rendezvous_support import config_for, logged_in, running

SECRET = "correct horse battery staple"
TURN = "turn:turn.example.org:3478"


def secret_file(tmp_path: Path, text: str | bytes = SECRET + "\n") -> Path:
    path = tmp_path / "turn-secret"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(0o600)
    return path


# ---- credentials -------------------------------------------------------------------------------


def test_credentials_are_the_ones_coturn_computes() -> None:
    username, password = ice.turn_credentials(ice.TurnSecret(SECRET.encode()), 1000.5, 600, "ab12")
    assert username == "1600:ab12"
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"1600:ab12", hashlib.sha1).digest()).decode()
    assert password == expected


def test_the_secret_never_shows_in_a_repr() -> None:
    config = ice.IceConfig(turn_urls=(TURN,), turn_secret=ice.TurnSecret(SECRET.encode()))
    assert SECRET not in repr(config) and SECRET not in repr(config.turn_secret)


def test_a_good_secret_file_is_read(tmp_path: Path) -> None:
    secret = ice.read_secret(secret_file(tmp_path))
    assert secret.sign("x") == ice.TurnSecret(SECRET.encode()).sign("x")
    assert ice.secret_file_warning(secret_file(tmp_path)) is None


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("", "too short"),
        ("short\n", "too short"),
        (b"\xff\xfe" * 20, "not UTF-8"),
        ("one line long enough\nand another\n", "one line"),
        ("x" * 5000, "too large"),
    ],
)
def test_a_bad_secret_file_is_refused_with_a_reason(
    tmp_path: Path, content: str | bytes, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        ice.read_secret(secret_file(tmp_path, content))


def test_a_missing_or_odd_secret_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ice.read_secret(tmp_path / "absent")
    with pytest.raises(ValueError, match="not a regular file"):
        ice.read_secret(tmp_path)


def test_a_secret_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    path.chmod(0o644)
    assert "chmod 600" in (ice.secret_file_warning(path) or "")


# ---- what the welcome says ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("msx.example.org", "msx.example.org"),
        ("msx.example.org:4567", "msx.example.org"),
        ("192.0.2.1:80", "192.0.2.1"),
        ("[2001:db8::1]:4567", None),  # aiortc cannot parse IPv6 STUN URLs
        ("bad host:1", None),
        ("", None),
        (None, None),
        ("a:b:c", None),
    ],
)
def test_stun_is_offered_at_the_host_the_player_used(header: str | None, host: str | None) -> None:
    assert ice.stun_host(header) == host


def test_servers_for_a_player() -> None:
    config = ice.IceConfig(stun_port=4567, turn_urls=(TURN,), turn_secret=ice.TurnSecret(SECRET.encode()))
    servers = config.servers_for("msx.example.org:4567", "ab" * 32, 1000.0)
    assert servers[0] == {"urls": ["stun:msx.example.org:4567"]}
    assert (
        servers[1]["urls"] == [TURN] and servers[1]["username"] == f"{1000 + ice.DEFAULT_LIFETIME}:{'ab' * 8}"
    )
    assert ice.IceConfig().servers_for("h", "ab" * 32, 0.0) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"stun_port": 0},
        {"turn_urls": ("http://x",), "turn_secret": ice.TurnSecret(SECRET.encode())},
        {"turn_urls": (TURN,)},
        {"turn_secret": ice.TurnSecret(SECRET.encode())},
        {"turn_lifetime": 5},
    ],
)
def test_an_ice_config_that_cannot_work_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ice.IceConfig(**changes)  # type: ignore[arg-type]


async def test_the_welcome_names_stun_and_joined_fresh_turn_and_never_the_secret(
    games: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    turn = ice.IceConfig(stun_port=3478, turn_urls=(TURN,), turn_secret=ice.TurnSecret(SECRET.encode()))
    async with running(replace(config_for(games), ice=turn)) as base:
        async with logged_in(session, base, "a") as first, logged_in(session, base, "b") as second:
            welcome = first.welcomed
            await first.join("r")
            joined = await first.expect("joined")
            await second.join("r")  # (while "a" is in: an emptied room's name is kept for "a")
            again = await second.expect("joined")
        async with session.get(f"{base}/healthz") as health, session.get(f"{base}/") as page:
            seen = await health.text() + await page.text()
    assert welcome["ice_servers"] == [{"urls": ["stun:127.0.0.1:3478"]}]  # TURN only for members
    stun_url, turn_server = joined["ice_servers"]
    assert stun_url == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn_server["urls"] == [TURN] and turn_server["username"].endswith(":" + first.key[:16])
    assert again["ice_servers"][1]["username"].endswith(":" + second.key[:16])
    assert again["ice_servers"][1]["credential"] == ice.TurnSecret(SECRET.encode()).sign(
        again["ice_servers"][1]["username"]
    )
    assert SECRET not in seen + json.dumps([welcome, joined, again]) + caplog.text


# ---- what the client makes of it ---------------------------------------------------------------


def test_the_client_keeps_good_servers_and_says_why_it_skips_the_others() -> None:
    turn = {"urls": [TURN], "username": "1:a", "credential": "c"}
    servers, problems = parse_ice_servers(
        [
            {"urls": "stun:h:1"},
            turn,
            {"urls": ["http://evil"]},
            {"urls": [TURN]},  # TURN without credentials
            {"urls": ["stun:h:1"], "username": "\x00"},
            "nonsense",
            {"urls": []},
        ]
    )
    assert servers == (IceServer(("stun:h:1",)), IceServer((TURN,), "1:a", "c"))
    assert len(problems) == 5
    assert parse_ice_servers(None) == ((), [])
    assert parse_ice_servers({"urls": "stun:h"})[0] == ()
    assert len(parse_ice_servers([{"urls": "stun:h:1"}] * 20)[0]) == 8


def test_a_players_own_servers_come_first_and_can_stand_alone() -> None:
    given = (IceServer(("stun:rendezvous:4567",)),)
    mine = IceOptions(stun=("stun:mine:3478",)).with_rendezvous(given)
    urls = [server.urls for server in mine.configuration().iceServers or []]
    assert urls == [["stun:mine:3478"], ["stun:rendezvous:4567"]]
    alone = IceOptions(stun=("stun:mine:3478",), use_rendezvous=False).with_rendezvous(given)
    assert [s.urls for s in alone.configuration().iceServers or []] == [["stun:mine:3478"]]


# ---- the rendezvous's flags --------------------------------------------------------------------


def _options(tmp_path: Path, *argv: str) -> ice.IceConfig:
    return cli.ice_config_from(cli.build_parser().parse_args(list(argv)))


def test_turn_flags_make_a_config(tmp_path: Path) -> None:
    path = secret_file(tmp_path)
    config = _options(tmp_path, "--turn", TURN, "--turn-secret-file", str(path), "--turn-lifetime", "600")
    assert config.turn_urls == (TURN,) and config.turn_lifetime == 600


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--turn", TURN], "--turn needs --turn-secret-file"),
        (["--turn-secret-file", "SECRET"], "without --turn"),
        (["--turn", TURN, "--turn-secret-file", "ABSENT"], "cannot read"),
    ],
)
def test_turn_flags_that_do_not_fit_are_refused(tmp_path: Path, argv: list[str], complaint: str) -> None:
    argv = [
        a.replace("SECRET", str(secret_file(tmp_path))).replace("ABSENT", str(tmp_path / "x")) for a in argv
    ]
    with pytest.raises(ValueError, match=complaint):
        _options(tmp_path, *argv)


@pytest.mark.parametrize(
    "argv",
    [["--turn", "http://x:1"], ["--stun-port", "70000"], ["--turn-lifetime", "1"], ["--turn-lifetime", "x"]],
)
def test_bad_flag_values_end_with_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.build_parser().parse_args(argv)
    assert ended.value.code == 2 and "error:" in capsys.readouterr().err


def test_help_explains_stun_and_turn(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--stun-port", "0 turns STUN off", "--turn-secret-file", "static-auth-secret"):
        assert words in text
