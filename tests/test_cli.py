"""The `campaign-engine` command's own contract: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGINE_", "CAMPAIGN_ENGINE_"))}
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_port_stops_serve_with_exit_2_and_one_line() -> None:
    result = run_cli("serve", ENGINE_PORT="abc", ENGINE_JWT_SECRET="s" * 32)
    assert result.returncode == 2
    assert result.stderr.strip() == "ENGINE_PORT: expected an integer from 1 to 65535, got 'abc'"


def test_serve_without_a_jwt_secret_exits_2_naming_the_variable() -> None:
    result = run_cli("serve", DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    assert result.returncode == 2
    assert result.stderr.startswith("ENGINE_JWT_SECRET:")


def token_claims(*args: str, **environ: str) -> dict[str, object]:
    import jwt

    result = run_cli("token", "--user", "alice", *args, ENGINE_JWT_SECRET="s" * 32, **environ)
    assert result.returncode == 0, result.stderr
    claims: dict[str, object] = jwt.decode(result.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    return claims


def test_token_prints_a_token_for_the_user() -> None:
    claims = token_claims("--ttl", "60")
    assert claims["exp"] - claims["iat"] == 60  # type: ignore[operator]


def test_token_expires_by_default_after_auth_token_ttl_seconds() -> None:
    claims = token_claims()
    assert claims["exp"] - claims["iat"] == 86400  # type: ignore[operator]
    claims = token_claims(CAMPAIGN_ENGINE_AUTH_TOKEN_TTL_SECONDS="120")
    assert claims["exp"] - claims["iat"] == 120  # type: ignore[operator]


def test_a_token_that_never_expires_is_asked_for_explicitly() -> None:
    assert "exp" not in token_claims("--ttl", "0")
    assert "exp" not in token_claims("--no-expiry")
    both = run_cli("token", "--user", "a", "--ttl", "5", "--no-expiry", ENGINE_JWT_SECRET="s" * 32)
    assert both.returncode == 2
    negative = run_cli("token", "--user", "a", "--ttl", "-5", ENGINE_JWT_SECRET="s" * 32)
    assert negative.returncode == 2 and "--ttl" in negative.stderr
    help_text = run_cli("token", "--help").stdout
    assert "--no-expiry" in help_text and "auth.token_ttl_seconds" in help_text


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "token", "simulator", "demo", "watch"):
        assert command in result.stdout
