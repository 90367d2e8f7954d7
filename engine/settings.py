"""The daemon's configuration: one frozen msgspec tree, loaded from TOML and the environment.

Precedence, highest first: environment variable, TOML file, built-in default.

Environment names: the keys listed in `FIXED_ENVIRONMENT` use the fixed names of the external
contract (`DATABASE_URL`, `ENGINE_PORT`, ...); every other key `<section>.<key>` is read from
`CAMPAIGN_ENGINE_<SECTION>_<KEY>` (uppercased), e.g. `CAMPAIGN_ENGINE_SENDER_CONCURRENCY=20`.
Environment values are strings converted to the field's type; an empty value for a key whose
default is unset (a URL or a secret) leaves it unset.

Every problem is reported as a `SettingsError` whose message is one line naming the key (TOML) or
the variable (environment) and the rule it breaks; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import SplitResult, urlsplit

import msgspec
from msgspec import Meta

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "FIXED_ENVIRONMENT",
    "AuthSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "EngineSettings",
    "LinksSettings",
    "LoggingSettings",
    "RedisSettings",
    "SenderSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "WebhookSettings",
    "WhatsAppSettings",
    "environment_name",
    "load_settings",
    "redacted",
]

DEFAULT_CONFIG_PATH: Final = "config/engine.toml"
ENV_PREFIX: Final = "CAMPAIGN_ENGINE_"

# Field types with their rules. The rules are msgspec constraints so that the model documents
# them; `_describe_rule` turns them into the text of error messages.
NonEmptyStr = Annotated[str, Meta(min_length=1)]
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class SettingsError(Exception):
    """A configuration problem; `str()` is one line naming the key or variable and the rule."""


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: NonEmptyStr | None = None
    pool_min_size: NonNegativeInt = 2
    pool_max_size: PositiveInt = 10
    operation_timeout_seconds: PositiveFloat = 120.0
    data_dir: NonEmptyStr = ".data"


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: NonEmptyStr | None = None


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    max_body_bytes: PositiveInt = 10_485_760
    shutdown_grace_seconds: Annotated[float, Meta(ge=0, le=10)] = 10.0


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    jwt_secret: NonEmptyStr | None = None
    token_ttl_seconds: PositiveInt = 86400


class WhatsAppSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_url: NonEmptyStr = "https://graph.facebook.com/v21.0"
    app_secret: NonEmptyStr | None = None
    verify_token: NonEmptyStr | None = None
    connect_timeout_seconds: PositiveFloat = 5.0
    read_timeout_seconds: PositiveFloat = 15.0
    # Prefixes an account's apiUrl must start with (same host too); empty: only api_url.
    allowed_api_urls: tuple[NonEmptyStr, ...] = ()

    def api_url_prefixes(self) -> tuple[str, ...]:
        return self.allowed_api_urls or (self.api_url,)


class EngineSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_running_campaigns: PositiveInt = 5
    lease_ttl_seconds: PositiveFloat = 30.0
    progress_every: PositiveInt = 100
    stats_every: PositiveInt = 50
    record_flush_interval_ms: PositiveInt = 50


class SenderSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    concurrency: PositiveInt = 10
    max_attempts: PositiveInt = 3
    backoff_base_seconds: NonNegativeFloat = 1.0
    backoff_max_seconds: NonNegativeFloat = 30.0
    requeue_delay_seconds: NonNegativeFloat = 60.0
    max_requeues: NonNegativeInt = 5
    throttle_slowdown_seconds: NonNegativeFloat = 5.0
    prefetch: NonNegativeInt = 16


class DeliverySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    in_doubt_timeout: PositiveFloat = 900.0
    on_in_doubt: Literal["fail", "resend"] = "fail"
    max_deferrals: NonNegativeInt = 3
    deferral_seconds: PositiveFloat = 86_400.0


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    flush_interval_ms: PositiveInt = 100
    max_batch: PositiveInt = 1000
    # Facts waiting to be applied; beyond it webhooks answer 503 (WhatsApp retries).
    max_queued: PositiveInt = 200_000
    # The dedicated webhook listener (api/webhook_listener.py); port unset: none, 0: any.
    listen_host: NonEmptyStr = "127.0.0.1"
    listen_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    max_body_bytes: PositiveInt = 1_048_576


class LinksSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The public address recipients reach the daemon at, for tracked links
    # (`{base_url}/l/<code>`); unset: campaigns with trackLinks are refused.
    base_url: NonEmptyStr | None = None


class LoggingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    engine: EngineSettings = EngineSettings()
    sender: SenderSettings = SenderSettings()
    delivery: DeliverySettings = DeliverySettings()
    webhooks: WebhookSettings = WebhookSettings()
    links: LinksSettings = LinksSettings()
    logging: LoggingSettings = LoggingSettings()


# The external contract's environment names; all other keys use `environment_name`'s scheme.
FIXED_ENVIRONMENT: Final[Mapping[tuple[str, str], str]] = {
    ("database", "url"): "DATABASE_URL",
    ("redis", "url"): "REDIS_URL",
    ("server", "host"): "ENGINE_HOST",
    ("server", "port"): "ENGINE_PORT",
    ("auth", "jwt_secret"): "ENGINE_JWT_SECRET",
    ("whatsapp", "api_url"): "WHATSAPP_API_URL",
    ("whatsapp", "app_secret"): "WHATSAPP_APP_SECRET",
    ("whatsapp", "verify_token"): "WHATSAPP_VERIFY_TOKEN",
}

_SECRETS: Final = frozenset(
    {("auth", "jwt_secret"), ("whatsapp", "app_secret"), ("whatsapp", "verify_token")}
)
_URLS: Final = frozenset(
    {("database", "url"), ("redis", "url"), ("whatsapp", "api_url"), ("links", "base_url")}
)
# Lists of URLs; from the environment, comma-separated.
_URL_LISTS: Final = {("whatsapp", "allowed_api_urls"): ("whatsapp", "api_url")}


def _section_types() -> dict[str, type[msgspec.Struct]]:
    sections: dict[str, type[msgspec.Struct]] = {}
    for field in msgspec.structs.fields(Settings):
        assert isinstance(field.type, type) and issubclass(field.type, msgspec.Struct)
        sections[field.name] = field.type
    return sections


_SECTIONS: Final = _section_types()
_FIELDS: Final[dict[str, dict[str, msgspec.structs.FieldInfo]]] = {
    section: {field.name: field for field in msgspec.structs.fields(cls)}
    for section, cls in _SECTIONS.items()
}


def environment_name(section: str, key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return FIXED_ENVIRONMENT.get((section, key), f"{ENV_PREFIX}{section}_{key}".upper())


_GENERIC_NAMES: Final = {
    f"{ENV_PREFIX}{section}_{key}".upper(): (section, key)
    for section, fields in _FIELDS.items()
    for key in fields
}


def load_settings(path: str | None, environ: Mapping[str, str]) -> Settings:
    """Read `path` (or `config/engine.toml` if it exists, when `path` is None), then apply
    `environ`. Raises `SettingsError` with a one-line message on any problem."""
    if path is None:
        document = _read_toml(DEFAULT_CONFIG_PATH) if Path(DEFAULT_CONFIG_PATH).is_file() else {}
        source_name = DEFAULT_CONFIG_PATH
    else:
        document = _read_toml(path)
        source_name = path

    values: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    # Who supplied each value, for messages from the cross-field checks.
    origins: dict[tuple[str, str], str] = {}

    for section, table in document.items():
        if section not in _SECTIONS:
            raise SettingsError(
                f"{source_name}: unknown section {section!r}{_suggest(section, _SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise SettingsError(f"{source_name}: {section!r} must be a table ([{section}])")
        for key, raw in table.items():
            dotted = f"{section}.{key}"
            if key not in _FIELDS[section]:
                known = [f"{section}.{name}" for name in _FIELDS[section]]
                raise SettingsError(
                    f"{source_name}: unknown key {dotted!r}{_suggest(dotted, known)}"
                )
            values[section][key] = _convert(section, key, raw, dotted, strict=True)
            origins[section, key] = dotted

    _check_environment_names(environ)
    for section, fields in _FIELDS.items():
        for key in fields:
            name = environment_name(section, key)
            if name in environ:
                values[section][key] = _convert(
                    section, key, environ[name].strip(), name, strict=False
                )
                origins[section, key] = name

    # Unset optional keys stay at their default (None).
    tree = {
        section: {key: value for key, value in table.items() if value is not None}
        for section, table in values.items()
    }
    settings = msgspec.convert(tree, Settings)
    _check_relations(settings, origins)
    return settings


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise SettingsError(f"{path}: configuration file not found") from None
    except IsADirectoryError:
        raise SettingsError(f"{path}: expected a file, got a directory") from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: invalid TOML: {_one_line(str(error))}") from None


def _check_environment_names(environ: Mapping[str, str]) -> None:
    """Reject misspelt generic names, which would otherwise be silently ignored. Only names that
    start with a section's prefix are ours; other `CAMPAIGN_ENGINE_*` variables are left alone."""
    section_prefixes = [f"{ENV_PREFIX}{section}_".upper() for section in _SECTIONS]
    for name in environ:
        if not any(name.startswith(prefix) for prefix in section_prefixes):
            continue
        target = _GENERIC_NAMES.get(name)
        if target is None:
            candidates = [n for n, t in _GENERIC_NAMES.items() if t not in FIXED_ENVIRONMENT]
            raise SettingsError(f"{name}: unknown setting{_suggest(name, candidates)}")
        if target in FIXED_ENVIRONMENT:
            raise SettingsError(f"{name}: not used; set {FIXED_ENVIRONMENT[target]} instead")


def _convert(section: str, key: str, raw: Any, origin: str, *, strict: bool) -> Any:
    """Convert one value to its field's type, checking the field's rule."""
    field = _FIELDS[section][key]
    optional = field.default is None
    if optional and raw == "":
        return None  # an empty URL or secret means "unset"
    if (section, key) in _URL_LISTS:
        return _convert_url_list(section, key, raw, origin, strict=strict)
    try:
        value = msgspec.convert(raw, type=field.type, strict=strict)
        valid = not (isinstance(value, float) and not math.isfinite(value))
    except msgspec.ValidationError:
        valid = False
    if not valid:
        raise SettingsError(
            f"{origin}: expected {_describe_rule(field.type)}, got {_shown(section, key, raw)}"
        )
    if (section, key) in _URLS:
        url_rule = _url_rule(section, key, value)
        if url_rule is not None:
            raise SettingsError(f"{origin}: expected {url_rule}, got {_shown(section, key, raw)}")
    return value


def _convert_url_list(
    section: str, key: str, raw: Any, origin: str, *, strict: bool
) -> tuple[str, ...]:
    what = "a list of URLs"
    if not strict and isinstance(raw, str):
        raw = [part.strip() for part in raw.split(",") if part.strip()]
        what = "a comma-separated list of URLs"
    scheme_of = _URL_LISTS[section, key]
    for item in raw if isinstance(raw, list) else [raw]:
        rule = _url_rule(*scheme_of, item if isinstance(item, str) else "")
        if rule is not None or not isinstance(raw, list):
            rule = rule or _url_rule(*scheme_of, "") or ""
            raise SettingsError(
                f"{origin}: expected {what} {rule.removeprefix('a URL ')}, got {item!r}"
            )
    return tuple(raw)


def _url_rule(section: str, key: str, value: str) -> str | None:
    """The rule `value` breaks, or None if it is an acceptable URL for `section.key`."""
    schemes: dict[tuple[str, str], tuple[str, ...]] = {
        ("database", "url"): ("postgresql", "postgres"),
        ("redis", "url"): ("redis", "rediss", "unix"),
        ("whatsapp", "api_url"): ("http", "https"),
        ("links", "base_url"): ("http", "https"),
    }
    allowed = schemes[section, key]
    rule = "a URL starting with " + " or ".join(f"{scheme}://" for scheme in allowed)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return rule
    if parts.scheme not in allowed:
        return rule
    # PostgreSQL URLs may name no host (a unix socket via ?host=); the others need one.
    if not parts.hostname and parts.scheme not in ("postgresql", "postgres", "unix"):
        return f"{rule} with a host"
    return None


def _describe_rule(annotation: Any) -> str:
    info = msgspec.inspect.type_info(annotation)
    if isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    match info:
        case msgspec.inspect.IntType():
            return "an integer" + _bounds(info.gt, info.ge, info.lt, info.le)
        case msgspec.inspect.FloatType():
            return "a number" + _bounds(info.gt, info.ge, info.lt, info.le)
        case msgspec.inspect.StrType() if info.min_length:
            return "a non-empty string"
        case msgspec.inspect.StrType():
            return "a string"
        case msgspec.inspect.LiteralType():
            # typing keeps the declared order; msgspec's type_info sorts the values.
            return "one of " + ", ".join(repr(v) for v in get_args(annotation))
        case _:
            raise AssertionError(f"no rule text for {annotation!r}")


def _bounds(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    if ge is not None and le is not None:
        return f" from {_number(ge)} to {_number(le)}"
    parts = []
    if gt is not None:
        parts.append(f"> {_number(gt)}")
    if ge is not None:
        parts.append(f">= {_number(ge)}")
    if lt is not None:
        parts.append(f"< {_number(lt)}")
    if le is not None:
        parts.append(f"<= {_number(le)}")
    return " " + " and ".join(parts) if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_relations(settings: Settings, origins: Mapping[tuple[str, str], str]) -> None:
    def origin(section: str, key: str) -> str:
        return origins.get((section, key), f"{section}.{key}")

    db = settings.database
    if db.pool_min_size > db.pool_max_size:
        raise SettingsError(
            f"{origin('database', 'pool_min_size')}: expected an integer <= "
            f"database.pool_max_size ({db.pool_max_size}), got {db.pool_min_size}"
        )
    sender = settings.sender
    if sender.backoff_base_seconds > sender.backoff_max_seconds:
        raise SettingsError(
            f"{origin('sender', 'backoff_base_seconds')}: expected a number <= "
            f"sender.backoff_max_seconds ({_number(sender.backoff_max_seconds)}), "
            f"got {_number(sender.backoff_base_seconds)}"
        )


def _shown(section: str, key: str, raw: Any) -> str:
    """How a rejected value appears in a message: secrets never, URL passwords masked."""
    if (section, key) in _SECRETS:
        return "<redacted>"
    if (section, key) in _URLS and isinstance(raw, str):
        return repr(_mask_url_password(raw))
    return repr(raw)


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return SplitResult(
        parts.scheme, f"{user}:***@{hostinfo}", parts.path, parts.query, parts.fragment
    ).geturl()


def _suggest(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for logging: secrets replaced, URL passwords masked."""
    tree: dict[str, Any] = msgspec.to_builtins(settings)
    for section, key in _SECRETS:
        if tree[section][key] is not None:
            tree[section][key] = "***"
    for section, key in _URLS:
        if tree[section][key] is not None:
            tree[section][key] = _mask_url_password(tree[section][key])
    return tree


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.settings",
        description="Load the configuration; print it (secrets redacted) or just check it.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help=f"TOML file (default {DEFAULT_CONFIG_PATH})"
    )
    parser.add_argument(
        "--check", action="store_true", help="only validate; print 'configuration ok'"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, os.environ)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    if args.check:
        print("configuration ok")
    else:
        print(json.dumps(redacted(settings), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
