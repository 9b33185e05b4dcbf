"""Settings: one scheme, three spellings, and a clear refusal of bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forward_auth import settings as s


def test_defaults_match_the_sdk() -> None:
    settings = s.load(environ={})
    assert settings.session_expired_status == 401
    assert settings.invalid_claim_status == 403
    assert settings.effective_anti_csrf == "NONE"
    assert settings.jwks_cache_seconds == 14400


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("session_expired_status: 440\nworkers: 3\ncheck_database: true\n")
    environ = {"FORWARD_AUTH_WORKERS": "5"}
    settings = s.load({"workers": "7"}, config_file=str(config), environ=environ)
    assert (settings.session_expired_status, settings.workers, settings.check_database) == (440, 7, True)
    assert s.load(config_file=str(config), environ=environ).workers == 5


def test_core_urls_split_on_semicolons_and_keep_base_paths() -> None:
    settings = s.load({"core_url": "http://a:1/; http://b:2/appid-x"}, environ={})
    assert settings.core_url == ("http://a:1", "http://b:2/appid-x")


def test_legacy_profile_answers_440_unless_told_otherwise() -> None:
    assert s.load({"legacy": "true"}, environ={}).session_expired_status == 440
    assert s.load({"legacy": "true", "session_expired_status": "401"}, environ={}).session_expired_status == 401


def test_samesite_none_derives_custom_header_csrf_as_the_sdk() -> None:
    settings = s.load({"cookie_samesite": "none", "cookie_secure": "true"}, environ={})
    assert settings.effective_anti_csrf == "VIA_CUSTOM_HEADER"
    off = s.load({"cookie_samesite": "none", "cookie_secure": "true", "enable_anti_csrf": "false"}, environ={})
    assert off.effective_anti_csrf == "NONE"


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"session_expired_status": "abc"}, "session_expired_status"),
        ({"session_expired_status": "200"}, "session_expired_status"),
        ({"anti_csrf": "SOMETIMES"}, "anti_csrf"),
        ({"core_url": "ftp://core"}, "core_url"),
        ({"core_url": " ; "}, "core_url"),
        ({"check_database": "perhaps"}, "check_database"),
        ({"jwks_cache_seconds": "-1"}, "jwks_cache_seconds"),
        ({"workers": "0"}, "workers"),
        ({"bind": "nowhere"}, "bind"),
        ({"cookie_samesite": "none"}, "cookie_secure"),
        ({"invalid_claim_status": "401"}, "invalid_claim_status"),
        ({"metrics_bind": "9100"}, "metrics_bind"),
        ({"metrics_bind": "unix:/tmp/metrics.sock"}, "metrics_bind"),
        ({"metrics_bind": "0.0.0.0:99999"}, "metrics_bind"),
        ({"metrics_bind": "127.0.0.1:8080"}, "metrics_bind"),  # the main port's address
        ({"tracing": "sometimes"}, "tracing"),
        ({"decision_cache_seconds": "1", "tracing": "true"}, "decision_cache_seconds"),  # the cache would be off
        ({"server": "uwsgi"}, "server"),
        ({"login_url": "javascript:alert(1)"}, "login_url"),
        ({"login_url": "//evil.example/auth"}, "login_url"),
        ({"login_url": "https://app.example.com/auth", "allowed_redirect_hosts": "other.example"}, "login_url"),
        ({"login_url": "/auth", "refresh_url": "https://elsewhere.example/refresh"}, "refresh_url"),
        ({"refresh_url": "/refresh"}, "refresh_url"),  # without login_url
        ({"allowed_redirect_hosts": "app.example.com, evil/x"}, "allowed_redirect_hosts"),
        ({"sdk_profile": "go"}, "sdk_profile"),
        ({"clock_skew_seconds": "-5"}, "clock_skew_seconds"),
    ],
)
def test_invalid_values_name_the_setting(overrides: dict[str, str], name: str) -> None:
    with pytest.raises(s.SettingsError) as info:
        s.load(overrides, environ={})
    assert info.value.name == name
    assert name in str(info.value)


def test_metrics_bind_is_a_host_and_port_or_unset() -> None:
    assert s.load(environ={}).metrics_bind is None
    assert s.load(environ={"FORWARD_AUTH_METRICS_BIND": ""}).metrics_bind is None
    assert s.load({"metrics_bind": "[::1]:9100"}, environ={}).metrics_bind == "[::1]:9100"
    with pytest.raises(s.SettingsError) as info:
        s.load(environ={"FORWARD_AUTH_METRICS_BIND": "metrics:port"})
    assert str(info.value) == ("invalid setting metrics_bind='metrics:port': "
                               "must be HOST:PORT (empty: /metrics on the main port)")


def test_redirect_hosts_default_to_the_login_urls_host() -> None:
    assert s.load(environ={}).redirect_hosts == ()
    assert s.load({"login_url": "https://App.Example.com/auth"}, environ={}).redirect_hosts == ("app.example.com",)
    listed = s.load({"login_url": "/auth", "allowed_redirect_hosts": "a.example, B.example."}, environ={})
    assert listed.redirect_hosts == ("a.example", "b.example")


def test_the_builtin_server_is_the_default_and_granian_and_gunicorn_choices() -> None:
    assert s.load(environ={}).server == "builtin"
    assert s.load({"server": "gunicorn"}, environ={}).server == "gunicorn"
    assert s.load({"server": "granian"}, environ={}).server == "granian"
    with pytest.raises(s.SettingsError, match="must be one of builtin, granian, gunicorn"):
        s.load({"server": "uvicorn"}, environ={})


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sesion_expired_status: 440\n")
    with pytest.raises(s.SettingsError, match="sesion_expired_status"):
        s.load(config_file=str(config), environ={})


def test_every_setting_has_a_parser_and_a_description() -> None:
    assert set(s.SETTING_NAMES) == set(s.PARSERS) == set(s.DESCRIPTIONS)


def test_the_docs_hold_the_current_settings_table() -> None:
    """Regenerate with: .venv/bin/python -c 'from forward_auth.settings import markdown_table as t; print(t())'."""
    page = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    assert s.markdown_table() in page


def test_cli_exits_2_with_one_line_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "forward_auth", "serve", "--check-config", "--session-expired-status", "abc"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "session_expired_status='abc'" in result.stderr


def test_the_session_api_needs_its_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = "a-session-api-secret-of-32-chars"
    with pytest.raises(s.SettingsError, match="session_api_key=None: must be set"):
        s.load({"session_api": "true"}, environ={})
    with pytest.raises(s.SettingsError, match=r"session_api_key='\*\*\*': must be at least 16") as short:
        s.load({"session_api": "true"}, environ={"FORWARD_AUTH_SESSION_API_KEY": "short-secret"})
    assert "short-secret" not in str(short.value)
    key_file = tmp_path / "key"
    key_file.write_text(f"  {secret}\n")
    settings = s.load({"session_api": "true", "session_api_key_file": str(key_file)}, environ={})
    assert settings.session_api_key == secret and secret not in repr(settings)
    assert s.public_view(settings)["session_api_key"] == "***"
    with pytest.raises(s.SettingsError, match="session_api_key_file=.*cannot be set with session_api_key"):
        s.load({"session_api_key_file": str(key_file)}, environ={"FORWARD_AUTH_SESSION_API_KEY": secret})
    with pytest.raises(s.SettingsError, match="session_api_key_file=.*cannot be read"):
        s.load({"session_api_key_file": str(tmp_path / "missing")}, environ={})
    with pytest.raises(s.SettingsError, match="session_api_bind=.*needs session_api: true"):
        s.load({"session_api_bind": "127.0.0.1:9001"}, environ={})
    with pytest.raises(s.SettingsError, match="session_api_bind=.*must differ"):
        s.load({"session_api": "true", "session_api_key": secret, "session_api_bind": "127.0.0.1:8080"}, environ={})
    with pytest.raises(s.SettingsError, match="session_api_trusted="):
        s.load({"session_api_trusted": "not-a-cidr"}, environ={})
