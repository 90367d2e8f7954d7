import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from engine.settings import (
    FIXED_ENVIRONMENT,
    Settings,
    SettingsError,
    environment_name,
    load_settings,
    redacted,
)

PROJECT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = PROJECT / "config" / "engine.toml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return str(path)


def error_of(path: str | None, environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/engine.toml here
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.database.url is None
    assert settings.database.data_dir == ".data"
    assert settings.redis.url is None
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.server.shutdown_grace_seconds == 10.0
    assert settings.auth.jwt_secret is None
    assert settings.whatsapp.api_url == "https://graph.facebook.com/v21.0"
    assert settings.engine.max_running_campaigns == 5
    assert settings.sender.concurrency == 10
    assert settings.sender.max_attempts == 3
    assert settings.delivery.on_in_doubt == "fail"
    assert settings.delivery.in_doubt_timeout == 900.0
    assert settings.logging.level == "INFO"


def test_shipped_file_lists_every_key_with_its_default() -> None:
    document = tomllib.loads(SHIPPED_CONFIG.read_text())
    expected = msgspec.to_builtins(Settings())
    assert {s: set(t) for s, t in document.items()} == {s: set(t) for s, t in expected.items()}
    assert load_settings(str(SHIPPED_CONFIG), {}) == Settings()


def test_shipped_file_names_each_key_s_environment_variable() -> None:
    text = SHIPPED_CONFIG.read_text()
    for section, table in msgspec.to_builtins(Settings()).items():
        for key in table:
            assert environment_name(section, key) in text, f"{section}.{key}"
    # ... and no variable that does not exist.
    generic = set(re.findall(r"CAMPAIGN_ENGINE_[A-Z_]+", text)) - {"CAMPAIGN_ENGINE_"}
    known = {
        environment_name(section, key)
        for section, table in msgspec.to_builtins(Settings()).items()
        for key in table
    }
    assert generic <= known
    # The CLI's documented check passes on the shipped file.
    assert "python -m engine.settings --check" in text


def test_default_path_is_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "engine.toml").write_text("[sender]\nconcurrency = 7\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {}).sender.concurrency == 7


def test_toml_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [database]
        url = "postgresql://app:pw@db.internal:5432/campaigns"
        pool_max_size = 20
        [server]
        port = 9000
        shutdown_grace_seconds = 2  # an integer is fine for a float
        [sender]
        concurrency = 25
        [delivery]
        on_in_doubt = "resend"
        [logging]
        level = "DEBUG"
        """,
    )
    settings = load_settings(path, {})
    assert settings.database.url == "postgresql://app:pw@db.internal:5432/campaigns"
    assert settings.database.pool_max_size == 20
    assert settings.database.pool_min_size == 2
    assert settings.server.port == 9000
    assert settings.server.shutdown_grace_seconds == 2.0
    assert settings.sender.concurrency == 25
    assert settings.delivery.on_in_doubt == "resend"
    assert settings.logging.level == "DEBUG"


def test_fixed_environment_names_win_over_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nhost = "0.0.0.0"\nport = 9000\n[database]\nurl = "postgresql://a@b/c"\n',
    )
    environ = {
        "ENGINE_HOST": "10.0.0.1",
        "ENGINE_PORT": "9100",
        "DATABASE_URL": "postgresql://x@y/z",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "ENGINE_JWT_SECRET": "s3cret",
        "WHATSAPP_API_URL": "http://127.0.0.1:9999/v21.0",
        "WHATSAPP_APP_SECRET": "app",
        "WHATSAPP_VERIFY_TOKEN": "verify",
    }
    settings = load_settings(path, environ)
    assert settings.server.host == "10.0.0.1"
    assert settings.server.port == 9100
    assert settings.database.url == "postgresql://x@y/z"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.auth.jwt_secret == "s3cret"
    assert settings.whatsapp.api_url == "http://127.0.0.1:9999/v21.0"
    assert settings.whatsapp.app_secret == "app"
    assert settings.whatsapp.verify_token == "verify"


def test_generic_environment_names_win_over_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[sender]\nconcurrency = 7\n[delivery]\non_in_doubt = 'fail'\n")
    environ = {
        "CAMPAIGN_ENGINE_SENDER_CONCURRENCY": "20",
        "CAMPAIGN_ENGINE_SENDER_BACKOFF_BASE_SECONDS": "0.5",
        "CAMPAIGN_ENGINE_DELIVERY_ON_IN_DOUBT": "resend",
        "CAMPAIGN_ENGINE_ENGINE_MAX_RUNNING_CAMPAIGNS": " 8 ",
        "CAMPAIGN_ENGINE_DATABASE_DATA_DIR": "/var/lib/engine",
        "CAMPAIGN_ENGINE_LOGGING_LEVEL": "WARNING",
        "CAMPAIGN_ENGINE_CONFIG": "not a setting, not ours to judge",
    }
    settings = load_settings(path, environ)
    assert settings.sender.concurrency == 20
    assert settings.sender.backoff_base_seconds == 0.5
    assert settings.delivery.on_in_doubt == "resend"
    assert settings.engine.max_running_campaigns == 8
    assert settings.database.data_dir == "/var/lib/engine"
    assert settings.logging.level == "WARNING"


def test_every_key_is_read_from_its_environment_variable() -> None:
    for section, table in msgspec.to_builtins(Settings()).items():
        for key in table:
            name = environment_name(section, key)
            assert name == FIXED_ENVIRONMENT.get(
                (section, key), f"CAMPAIGN_ENGINE_{section}_{key}".upper()
            )
            # "?" is either accepted verbatim (free-form strings) or rejected naming the variable.
            try:
                settings = load_settings(None, {name: "?"})
            except SettingsError as error:
                assert str(error).startswith(f"{name}: expected ")
            else:
                assert getattr(getattr(settings, section), key) == "?"


def test_empty_environment_value_unsets_an_optional_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\nurl = "redis://cache:6379/0"\n')
    assert load_settings(path, {"REDIS_URL": ""}).redis.url is None
    assert load_settings(path, {"ENGINE_JWT_SECRET": ""}).auth.jwt_secret is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ENGINE_PORT": "abc"}, "ENGINE_PORT: expected an integer from 1 to 65535, got 'abc'"),
        (
            {"ENGINE_PORT": "70000"},
            "ENGINE_PORT: expected an integer from 1 to 65535, got '70000'",
        ),
        (
            {"CAMPAIGN_ENGINE_SENDER_CONCURRENCY": "-3"},
            "CAMPAIGN_ENGINE_SENDER_CONCURRENCY: expected an integer >= 1, got '-3'",
        ),
        (
            {"CAMPAIGN_ENGINE_DELIVERY_ON_IN_DOUBT": "retry"},
            "CAMPAIGN_ENGINE_DELIVERY_ON_IN_DOUBT: expected one of 'fail', 'resend', got 'retry'",
        ),
        (
            {"WHATSAPP_API_URL": "graph.facebook.com"},
            "WHATSAPP_API_URL: expected a URL starting with http:// or https://, "
            "got 'graph.facebook.com'",
        ),
        (
            {"CAMPAIGN_ENGINE_SERVER_SHUTDOWN_GRACE_SECONDS": "30"},
            "CAMPAIGN_ENGINE_SERVER_SHUTDOWN_GRACE_SECONDS: expected a number from 0 to 10, "
            "got '30'",
        ),
        (
            {"CAMPAIGN_ENGINE_SENDER_BACKOFF_MAX_SECONDS": "nan"},
            "CAMPAIGN_ENGINE_SENDER_BACKOFF_MAX_SECONDS: expected a number >= 0, got 'nan'",
        ),
        (
            {"CAMPAIGN_ENGINE_SENDER_CONCURENCY": "20"},
            "CAMPAIGN_ENGINE_SENDER_CONCURENCY: unknown setting "
            "(did you mean 'CAMPAIGN_ENGINE_SENDER_CONCURRENCY'?)",
        ),
        (
            {"CAMPAIGN_ENGINE_SERVER_PORT": "9000"},
            "CAMPAIGN_ENGINE_SERVER_PORT: not used; set ENGINE_PORT instead",
        ),
        (
            {"CAMPAIGN_ENGINE_DATABASE_POOL_MIN_SIZE": "20"},
            "CAMPAIGN_ENGINE_DATABASE_POOL_MIN_SIZE: expected an integer <= "
            "database.pool_max_size (10), got 20",
        ),
    ],
)
def test_bad_environment_values(environ: dict[str, str], message: str) -> None:
    assert error_of(None, environ) == message


def test_secrets_and_passwords_stay_out_of_messages() -> None:
    assert (
        error_of(None, {"DATABASE_URL": "mysql://app:hunter2@db/campaigns"})
        == "DATABASE_URL: expected a URL starting with postgresql:// or postgres://, "
        "got 'mysql://app:***@db/campaigns'"
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[sender]\nconcurrency = 0\n", "sender.concurrency: expected an integer >= 1, got 0"),
        ("[sender]\nconcurrency = -5\n", "sender.concurrency: expected an integer >= 1, got -5"),
        (
            '[sender]\nconcurrency = "20"\n',
            "sender.concurrency: expected an integer >= 1, got '20'",
        ),
        ("[server]\nport = 70000\n", "server.port: expected an integer from 1 to 65535, got 70000"),
        (
            '[delivery]\non_in_doubt = "retry"\n',
            "delivery.on_in_doubt: expected one of 'fail', 'resend', got 'retry'",
        ),
        (
            '[whatsapp]\napi_url = "ftp://graph.facebook.com"\n',
            "whatsapp.api_url: expected a URL starting with http:// or https://, "
            "got 'ftp://graph.facebook.com'",
        ),
        (
            '[logging]\nlevel = "info"\n',
            "logging.level: expected one of 'DEBUG', 'INFO', 'WARNING', 'ERROR', got 'info'",
        ),
        (
            "[sender]\nbackoff_base_seconds = 60\n",
            "sender.backoff_base_seconds: expected a number <= sender.backoff_max_seconds (30), "
            "got 60",
        ),
    ],
)
def test_bad_toml_values(tmp_path: Path, toml: str, message: str) -> None:
    assert error_of(write(tmp_path, toml), {}) == message


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[sender]\nconcurency = 20\n")
    assert (
        error_of(path, {})
        == f"{path}: unknown key 'sender.concurency' (did you mean 'sender.concurrency'?)"
    )


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[sendr]\nconcurrency = 20\n")
    assert error_of(path, {}) == f"{path}: unknown section 'sendr' (did you mean 'sender'?)"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[sender]\nconcurrency = = 20\n")
    assert error_of(path, {}) == f"{path}: invalid TOML: Invalid value (at line 2, column 15)"


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    assert error_of(path, {}) == f"{path}: configuration file not found"


def test_redacted_hides_secrets() -> None:
    settings = load_settings(
        None,
        {
            "ENGINE_JWT_SECRET": "jwt-secret",
            "WHATSAPP_APP_SECRET": "app-secret",
            "DATABASE_URL": "postgresql://app:hunter2@db:5432/campaigns",
        },
    )
    tree = redacted(settings)
    assert tree["auth"]["jwt_secret"] == "***"
    assert tree["whatsapp"]["app_secret"] == "***"
    assert tree["whatsapp"]["verify_token"] is None
    assert tree["database"]["url"] == "postgresql://app:***@db:5432/campaigns"
    for secret in ("hunter2", "jwt-secret", "app-secret"):
        assert secret not in repr(tree)


def _run_check(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_ENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "engine.settings", "--check", *args],
        env={**clean, **env},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_command_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _run_check(["--config", str(SHIPPED_CONFIG)], {"ENGINE_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr == "ENGINE_PORT: expected an integer from 1 to 65535, got 'abc'\n"
    assert result.stdout == ""

    bad = write(tmp_path, "[sender]\nconcurrency = 0\n")
    result = _run_check(["--config", bad], {})
    assert (result.returncode, result.stderr) == (
        2,
        "sender.concurrency: expected an integer >= 1, got 0\n",
    )


def test_check_command_accepts_the_shipped_file() -> None:
    result = _run_check(["--config", str(SHIPPED_CONFIG)], {"ENGINE_PORT": "8081"})
    assert (result.returncode, result.stdout, result.stderr) == (0, "configuration ok\n", "")


def test_allowed_api_urls_a_list_from_toml_or_comma_separated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "CAMPAIGN_ENGINE_WHATSAPP_ALLOWED_API_URLS"
    default = load_settings(None, {"WHATSAPP_API_URL": "https://graph.example/v1"})
    assert default.whatsapp.allowed_api_urls == ()
    assert default.whatsapp.api_url_prefixes() == ("https://graph.example/v1",)
    both = ("https://graph.facebook.com/", "http://127.0.0.1:")
    path = write(tmp_path, f"[whatsapp]\nallowed_api_urls = {list(both)!r}\n".replace("'", '"'))
    assert load_settings(path, {}).whatsapp.api_url_prefixes() == both
    from_env = load_settings(None, {name: " https://graph.facebook.com/ ,http://127.0.0.1:, "})
    assert from_env.whatsapp.allowed_api_urls == both
    assert load_settings(path, {name: ""}).whatsapp.allowed_api_urls == ()
    assert error_of(None, {name: "https://a.example,ftp://b.example"}) == (
        f"{name}: expected a comma-separated list of URLs starting with http:// or https://"
        ", got 'ftp://b.example'"
    )
    bad_toml = write(tmp_path, '[whatsapp]\nallowed_api_urls = "https://a.example"\n')
    assert error_of(bad_toml, {}) == (
        "whatsapp.allowed_api_urls: expected a list of URLs starting with http:// or https://"
        ", got 'https://a.example'"
    )
