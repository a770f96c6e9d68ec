"""Configuration: environment over TOML over defaults; errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.checks import redact_url, summary
from relay.config import load_settings
from relay.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_load_without_any_source(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.redis.prefix == "relay"
    assert settings.sinks == ("redis",)


def test_shipped_default_file_matches_the_code_defaults() -> None:
    assert load_settings(REPO / "config" / "relay.toml") == load_settings()


def test_environment_wins_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'rooms = ["from-file"]\n[redis]\nprefix = "file"\nroom_maxlen = 7\n'
        '[livekit]\napi_key = "k"\napi_secret = "s"\n'
    )
    monkeypatch.setenv("RELAY_REDIS__PREFIX", "env")
    settings = load_settings(config)
    assert settings.redis.prefix == "env"
    assert settings.redis.room_maxlen == 7
    assert settings.rooms == ("from-file",)


def test_invalid_value_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_PIPELINE__BATCH_MAX_EVENTS", "-3")
    with pytest.raises(ConfigError, match="RELAY_PIPELINE__BATCH_MAX_EVENTS"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        # Static rooms need the API key and secret: the observer mints its tokens.
        (
            {"RELAY_ROOMS": '["r1"]'},
            ["RELAY_LIVEKIT__API_KEY", "RELAY_LIVEKIT__API_SECRET", "RELAY_ROOMS"],
        ),
        ({"RELAY_ROOMS": '["r1", ""]'}, ["RELAY_ROOMS (toml: rooms[1])"]),
        ({"RELAY_SINKS": "[]"}, ["RELAY_SINKS"]),
        ({"RELAY_SINKS": '["kafka"]'}, ["RELAY_SINKS (toml: sinks[0])"]),
        (
            {"RELAY_ROOMS": '["a", "b", "c"]', "RELAY_MAX_ROOMS": "2"},
            ["RELAY_ROOMS", "RELAY_MAX_ROOMS"],
        ),
        ({"RELAY_LIVEKIT__REJOIN_BACKOFF_MAX_S": "0.1"}, ["RELAY_LIVEKIT__REJOIN_BACKOFF_MAX_S"]),
        ({"RELAY_PIPELINE__RETRY_MAX_S": "0.01"}, ["RELAY_PIPELINE__RETRY_MAX_S"]),
        ({"RELAY_LIVEKIT__OBSERVER_IDENTITY": "obs-{pod}"}, ["OBSERVER_IDENTITY", "{host}"]),
        ({"RELAY_REDIS__ROOM_KEY": "x:{room"}, ["RELAY_REDIS__ROOM_KEY", "{prefix}, {room}"]),
        ({"RELAY_REDIS__ROOM_KEY": "x:{prefix.y}"}, ["RELAY_REDIS__ROOM_KEY", "bad template"]),
        ({"RELAY_REDIS__ROOM_KEY": "x:{{room}}"}, ["RELAY_REDIS__ROOM_KEY", "must use {room}"]),
        ({"RELAY_LIVEKIT__OBSERVER_IDENTITY": "o-{n[0]}"}, ["OBSERVER_IDENTITY"]),
        (
            {"RELAY_LIVEKIT__OBSERVER_IDENTITY": "o-{worker}-{pid}-{rand}-{proc}"},
            ["RELAY_LIVEKIT__OBSERVER_IDENTITY", "unknown placeholder {proc}", "{rand}, {n}"],
        ),
        ({"RELAY_WORKER_INDEX": "-1"}, ["RELAY_WORKER_INDEX"]),
        (
            {"RELAY_DISCOVERY__STANDBY": "true", "RELAY_DISCOVERY__STANDBY_KEEP_S": "10"},
            ["discovery.standby_keep_s (10)", "discovery.lease_ttl_s (15)"],
        ),
        ({"RELAY_REDIS__WRITE_GUARD": "lua"}, ["RELAY_REDIS__WRITE_GUARD"]),
        # Several workers with an identity template that is the same in each of them.
        (
            {
                "RELAY_WORKERS": "2",
                "RELAY_DISCOVERY__ENABLED": "true",
                "RELAY_LIVEKIT__OBSERVER_IDENTITY": "relay-{host}-{n}",
            },
            ["RELAY_LIVEKIT__OBSERVER_IDENTITY", "RELAY_WORKERS", "{worker}, {pid} or {rand}"],
        ),
    ],
)
def test_contradictory_or_unusable_settings_name_their_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    for name in names:
        assert name in str(raised.value)


@pytest.mark.parametrize(
    "template", ["relay-{host}-{worker}-{n}", "relay-{pid}-{n}", "obs-{rand}-{n}"]
)
def test_several_workers_take_a_template_that_tells_them_apart(
    monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    monkeypatch.setenv("RELAY_WORKERS", "2")
    monkeypatch.setenv("RELAY_DISCOVERY__ENABLED", "true")
    monkeypatch.setenv("RELAY_LIVEKIT__OBSERVER_IDENTITY", template)
    assert load_settings().livekit.observer_identity == template


def test_the_old_identity_template_still_loads_for_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_LIVEKIT__OBSERVER_IDENTITY", "relay-{host}-{n}")
    monkeypatch.setenv("RELAY_WORKER_INDEX", "3")
    settings = load_settings()
    assert (settings.livekit.observer_identity, settings.worker_index) == ("relay-{host}-{n}", 3)


def test_static_rooms_with_credentials_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_ROOMS", '["a", "b"]')
    monkeypatch.setenv("RELAY_LIVEKIT__API_KEY", "k")
    monkeypatch.setenv("RELAY_LIVEKIT__API_SECRET", "s")
    monkeypatch.setenv("RELAY_MAX_ROOMS", "2")
    assert load_settings().rooms == ("a", "b")


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("[redis]\nprefx = 'typo'\n")
    with pytest.raises(ConfigError, match=r"redis\.prefx"):
        load_settings(config)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_never_appear_in_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LIVEKIT__API_SECRET", "s3cr3t-livekit")
    monkeypatch.setenv("RELAY_HTTP__ADMIN_TOKEN", "s3cr3t-admin")
    monkeypatch.setenv("RELAY_REDIS__URL", "redis://user:s3cr3t-redis@redis:6379/0")
    settings = load_settings()
    text = repr(summary(settings)) + repr(settings) + str(settings)
    assert "s3cr3t" not in text
    assert "redis://user:***@redis:6379/0" in text


def test_redact_url_leaves_passwordless_urls_alone() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://h:6379/0?db=2") == "redis://h:6379/0?db=2"


def test_redact_url_masks_a_password_given_as_a_query_parameter() -> None:
    masked = redact_url("rediss://h:6380/0?ssl_cert_reqs=none&password=s3cr3t")
    assert masked == "rediss://h:6380/0?ssl_cert_reqs=none&password=***"
    assert redact_url("redis://:pw@h/0?Password=pw") == "redis://:***@h/0?Password=***"


@pytest.mark.parametrize("example", sorted((REPO / "config" / "examples").glob("*.toml")), ids=str)
def test_every_example_is_valid_but_for_its_secrets_and_files(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_LIVEKIT__API_KEY", "key")
    monkeypatch.setenv("RELAY_LIVEKIT__API_SECRET", "secret")
    try:
        load_settings(example)
    except ConfigError as exc:
        # The files an example points at are the operator's (certificates): absent here.
        problems = str(exc).removeprefix("invalid configuration: ").split("; ")
        assert all("no such file" in problem for problem in problems), str(exc)
