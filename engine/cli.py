"""The `campaign-engine` command."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AbstractContextManager

import trio

from engine.settings import Settings, SettingsError, load_settings

DESCRIPTION = """Executes WhatsApp broadcast campaigns with rate limits, pause/resume,
exact progress and a live Socket.IO stream. Configuration: config/engine.toml
(or --config), every key overridable by environment (see README)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="campaign-engine", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the daemon: migrations, engine, HTTP API and Socket.IO",
        description="Applies pending migrations, then runs the engine, the HTTP API and "
        "Socket.IO until SIGINT/SIGTERM (in-flight sends finish within the grace period).",
    )
    serve.add_argument("--config", help="TOML configuration file (default config/engine.toml)")
    serve.add_argument("--host", help="listen address (default ENGINE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default ENGINE_PORT or 8080)")

    migrate = commands.add_parser("migrate", help="apply pending migrations and exit")
    migrate.add_argument("--config")

    token = commands.add_parser(
        "token",
        help="print a bearer token for a user",
        description="Prints a bearer token (JWT, HS256, signed with ENGINE_JWT_SECRET) for a "
        "user. It expires after auth.token_ttl_seconds (default 86400) unless --ttl says "
        "otherwise; a token that never expires must be asked for (--ttl 0 or --no-expiry).",
    )
    token.add_argument("--user", required=True, help="user id (the token's `sub`)")
    lifetime = token.add_mutually_exclusive_group()
    lifetime.add_argument(
        "--ttl",
        type=_seconds,
        metavar="SECONDS",
        help="seconds until it expires (default: auth.token_ttl_seconds); 0: never",
    )
    lifetime.add_argument(
        "--no-expiry", action="store_true", help="a token that never expires (same as --ttl 0)"
    )
    token.add_argument("--config")

    commands.add_parser(
        "simulator",
        help="a local stand-in for the WhatsApp Cloud API (see `simulator --help`)",
        add_help=False,
    )
    demo = commands.add_parser(
        "demo", help="zero-setup tour: embedded database, simulator, daemon, sample campaigns"
    )
    demo.add_argument("--port", type=int, default=8080)
    watch = commands.add_parser("watch", help="follow a campaign's progress in the terminal")
    watch.add_argument("campaign_id")
    watch.add_argument("--url", default="http://127.0.0.1:8080", help="the daemon's URL")
    watch.add_argument("--token", help="bearer token (default: $CAMPAIGN_ENGINE_TOKEN)")
    return parser


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds >= 0, got {text!r}")
    return value


def _settings(path: str | None) -> Settings:
    try:
        return load_settings(path, os.environ)
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


def _database_url(settings: Settings) -> AbstractContextManager[str]:
    # Imported here: the embedded database's package is only loaded when it is used.
    from engine.tools.embedded_db import database_url

    return database_url(settings)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulator"]:
        from engine.tools.simulator import main as simulator_main

        return simulator_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from engine.tools.demo import main as demo_main

        return demo_main(port=args.port)
    if args.command == "watch":
        from engine.tools.watch import main as watch_main

        return watch_main(
            args.campaign_id,
            url=args.url,
            token=args.token or os.environ.get("CAMPAIGN_ENGINE_TOKEN"),
        )
    settings = _settings(args.config)
    if args.command == "token":
        from api.auth import issue_token

        if not settings.auth.jwt_secret:
            print("ENGINE_JWT_SECRET: required to sign tokens", file=sys.stderr)
            return 2
        ttl = settings.auth.token_ttl_seconds if args.ttl is None else args.ttl
        expires = not args.no_expiry and ttl > 0
        print(issue_token(settings.auth.jwt_secret, args.user, ttl if expires else None))
        return 0

    from engine.daemon import (
        configure_allocator,
        configure_collector,
        configure_logging,
        migrate,
        serve,
    )

    configure_logging(settings.logging.level)
    if args.command == "migrate":
        with _database_url(settings) as dsn:
            applied = trio.run(migrate, settings, dsn)
        print(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
        return 0
    if not settings.auth.jwt_secret:
        print(
            "ENGINE_JWT_SECRET: required by serve (or run `campaign-engine demo`)", file=sys.stderr
        )
        return 2
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if not 0 <= port <= 65535:
        print(f"--port: expected an integer from 0 to 65535, got {port}", file=sys.stderr)
        return 2
    configure_allocator()  # a long-running process: give freed memory back (engine/daemon.py)
    configure_collector()
    with _database_url(settings) as dsn:
        trio.run(lambda: serve(settings, dsn, host=host, port=port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
