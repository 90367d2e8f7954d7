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


def test_token_prints_a_token_for_the_user() -> None:
    import jwt

    result = run_cli("token", "--user", "alice", "--ttl", "60", ENGINE_JWT_SECRET="s" * 32)
    assert result.returncode == 0
    claims = jwt.decode(result.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 60


def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "token", "simulator", "demo", "watch"):
        assert command in result.stdout
