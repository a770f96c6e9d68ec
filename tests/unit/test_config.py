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
    config.write_text('rooms = ["from-file"]\n[redis]\nprefix = "file"\nroom_maxlen = 7\n')
    monkeypatch.setenv("RELAY_REDIS__PREFIX", "env")
    settings = load_settings(config)
    assert settings.redis.prefix == "env"
    assert settings.redis.room_maxlen == 7
    assert settings.rooms == ("from-file",)


def test_invalid_value_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_PIPELINE__BATCH_MAX_EVENTS", "-3")
    with pytest.raises(ConfigError, match="RELAY_PIPELINE__BATCH_MAX_EVENTS"):
        load_settings()


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
