"""Settings: one TOML file plus ``PROXBOX_<SECTION>_<KEY>`` environment overrides, into frozen attrs classes.

Every problem is reported as a :class:`~proxbox.errors.ConfigError` naming the key (``netbox.timeout``,
``proxmox[1].host``) and why. Secrets (tokens, passwords, API keys) may come from files
(``token_file = "/run/credentials/proxbox.service/netbox-token"``) and are never printed: :func:`redacted`
gives the effective settings with each secret replaced.

Environment overrides: ``PROXBOX_NETBOX_URL``, ``PROXBOX_SYNC_PRUNE=true``, ``PROXBOX_SERVER_API_KEYS=a,b``;
for ``[[proxmox]]`` tables ``PROXBOX_PROXMOX_<INDEX>_<KEY>`` (``PROXBOX_PROXMOX_0_TOKEN_VALUE``).
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from proxbox.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/proxbox/proxbox.toml"
ENV_PREFIX = "PROXBOX_"
REDACTED = "***"

VerifySSL = bool | str  # True/False, or the path of a CA bundle


def secret(default: Any = "", **kw: Any) -> Any:
    """A field that never appears in output."""
    return attrs.field(default=default, metadata={"secret": True, **kw.pop("metadata", {})}, **kw)


def doc(default: Any, text: str, **kw: Any) -> Any:
    return attrs.field(default=default, metadata={"doc": text}, **kw)


@attrs.frozen(kw_only=True)
class ServerSettings:
    host: str = doc("127.0.0.1", "address to listen on; a non-loopback address requires api_keys")
    port: int = doc(8800, "TCP port")
    api_keys: tuple[str, ...] = secret(
        (), metadata={"doc": "API keys accepted as Bearer / X-Proxbox-API-Key"}
    )
    api_keys_file: str = doc("", "file with one API key per line (systemd LoadCredential=)")
    state_dir: str = doc("/var/lib/proxbox", "run history (SQLite) lives here")
    heartbeat_s: float = doc(20.0, "WebSocket ping interval; idle clients are never disconnected")
    auth_timeout_s: float = doc(5.0, "time a WebSocket client has to send {'api_key': ...}")
    max_message_bytes: int = doc(65536, "largest inbound WebSocket message (larger: close 1009)")
    subscriber_buffer: int = doc(2000, "frames buffered per watcher before it is dropped (close 1013)")
    event_log_limit: int = doc(50000, "frames kept per run for late joiners and replay")
    history_limit: int = doc(500, "finished runs kept in history")
    drain_grace_s: float = doc(60.0, "on SIGTERM, how long a running sync may finish before it is cancelled")
    cancel_grace_s: float = doc(
        10.0, "after a drain cancel, how long a run may take to stop before it is interrupted"
    )
    close_timeout_s: float = doc(
        5.0, "how long a closing WebSocket waits for the client before the socket is cut"
    )
    retained_runs: int = doc(
        10, "finished runs whose frames stay in memory for replay (history keeps the rest)"
    )
    send_buffer_bytes: int = doc(
        131072, "kernel send buffer per streaming client (0: OS autotuning); bounds what a stuck client holds"
    )


@attrs.frozen(kw_only=True)
class NetBoxSettings:
    url: str = doc("", "NetBox base URL, e.g. https://netbox.example.com (required)")
    token: str = secret("", metadata={"doc": "NetBox API token"})
    token_file: str = doc("", "read the token from this file instead")
    verify_ssl: VerifySSL = doc(True, "verify TLS: true, false or a CA bundle path")
    timeout: float = doc(30.0, "seconds per request")
    concurrency: int = doc(4, "parallel NetBox requests")
    bulk_chunk: int = doc(100, "objects per bulk request")
    retries: int = doc(3, "attempts for transient errors")
    backoff_s: float = doc(0.5, "first retry delay; doubles each attempt, with full jitter")


@attrs.frozen(kw_only=True)
class ProxmoxSettings:
    name: str = doc("", "a name for this endpoint (logs, metrics); defaults to host")
    host: str = doc("", "Proxmox VE host name or address (required)")
    port: int = doc(8006, "API port")
    user: str = doc("", "user@realm, e.g. netbox@pve (required)")
    token_name: str = doc("", "API token id (with token_value); preferred over password")
    token_value: str = secret("", metadata={"doc": "API token secret"})
    token_value_file: str = doc("", "read the token secret from this file instead")
    password: str = secret("", metadata={"doc": "password (ticket auth) when no token is configured"})
    password_file: str = doc("", "read the password from this file instead")
    verify_ssl: VerifySSL = doc(True, "verify TLS: true, false or a CA bundle path")
    timeout: float = doc(10.0, "read timeout per request, seconds")
    connect_timeout: float = doc(5.0, "connect timeout per request, seconds")
    concurrency: int = doc(4, "worker threads (and parallel requests) for this endpoint, 1-8")
    retries: int = doc(3, "attempts for transient errors")
    backoff_s: float = doc(0.5, "first retry delay; doubles each attempt, with full jitter")
    site: str = doc("", "NetBox site for this cluster's nodes and VMs (default: [sync].default_site)")

    @property
    def label(self) -> str:
        return self.name or self.host

    @property
    def uses_token(self) -> bool:
        return bool(self.token_name)


@attrs.frozen(kw_only=True)
class SyncSettings:
    default_site: str = doc("Proxmox VE", "site created and used when an endpoint has no site")
    include_templates: bool = doc(False, "sync templates as VMs")
    include_stopped: bool = doc(True, "sync stopped guests")
    include_clusters: tuple[str, ...] = doc((), "regexes; only matching clusters are synced")
    exclude_clusters: tuple[str, ...] = doc((), "regexes; matching clusters are skipped")
    include_nodes: tuple[str, ...] = doc((), "regexes on node names")
    exclude_nodes: tuple[str, ...] = doc((), "regexes on node names")
    include_guests: tuple[str, ...] = doc((), "regexes on guest names")
    exclude_guests: tuple[str, ...] = doc((), "regexes on guest names")
    include_tags: tuple[str, ...] = doc((), "only guests carrying one of these Proxmox tags")
    exclude_tags: tuple[str, ...] = doc((), "skip guests carrying any of these Proxmox tags")
    primary_ip: Literal["always", "when-undefined", "never"] = doc(
        "when-undefined", "set primary IPv4/IPv6: always, when-undefined or never"
    )
    overwrite_role: bool = doc(True, "proxbox may change a VM's role")
    overwrite_description: bool = doc(True, "proxbox may change descriptions")
    overwrite_tags: bool = doc(True, "proxbox may change mirrored Proxmox tags")
    overwrite_platform: bool = doc(True, "proxbox may change a VM's platform")
    overwrite_primary_ip: bool = doc(True, "proxbox may change primary IPs (subject to primary_ip)")
    adopt_unowned: bool = doc(False, "take ownership of matching NetBox objects without the proxbox tag")
    prune: bool = doc(False, "delete orphans after prune_after_days")
    prune_after_days: int = doc(7, "grace period before an orphan is deleted")
    max_deletes_per_run: int = doc(50, "upper bound on deletions in one run")
    journal: bool = doc(True, "write a journal entry on each touched cluster at the end of a run")
    interval_s: float = doc(0.0, "run a full sync every N seconds while serving (0: only on demand)")
    node_concurrency: int = doc(4, "guests discovered in parallel per node")
    proxmox_max_in_flight: int = doc(
        6, "Proxmox calls in flight across all endpoints (bounds the threads competing with the event loop)"
    )


@attrs.frozen(kw_only=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = doc("info", "log level")
    format: Literal["auto", "json", "console"] = doc("auto", "auto: console on a TTY, JSON lines otherwise")


@attrs.frozen(kw_only=True)
class Settings:
    server: ServerSettings = attrs.field(factory=ServerSettings)
    netbox: NetBoxSettings = attrs.field(factory=NetBoxSettings)
    proxmox: tuple[ProxmoxSettings, ...] = ()
    sync: SyncSettings = attrs.field(factory=SyncSettings)
    logging: LoggingSettings = attrs.field(factory=LoggingSettings)
    source: str = attrs.field(default="", metadata={"internal": True})


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "netbox": NetBoxSettings,
    "sync": SyncSettings,
    "logging": LoggingSettings,
}

# ---------------------------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, tp: Any, value: Any, *, from_env: bool) -> Any:
    """Check ``value`` against ``tp``; environment strings are parsed into the declared type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):  # VerifySSL: bool | str
        if from_env and isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        if isinstance(value, bool | str):
            return value
        raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__}")
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(f"{key}[{i}]", item, v, from_env=from_env) for i, v in enumerate(value))
    if tp is bool:
        if from_env and isinstance(value, str):
            if value.strip().lower() not in _BOOLS:
                raise ConfigError(key, f"expected true or false, got {value!r}")
            return _BOOLS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(key, f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(f"unsupported settings type {tp!r} for {key}")  # pragma: no cover


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _build(cls: type, prefix: str, raw: Mapping[str, Any], env_fields: set[str]) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix, f"expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}"
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(key, f"unknown key (known keys in [{prefix}]: {known})")
        kwargs[name] = _coerce(key, hints[name], value, from_env=name in env_fields)
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------------- load


def _env_overrides(env: Mapping[str, str], data: dict[str, Any]) -> dict[str, set[str]]:
    """Apply PROXBOX_<SECTION>_<KEY> to ``data`` in place; returns which keys came from the environment."""
    from_env: dict[str, set[str]] = {}
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == "PROXBOX_CONFIG":
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section == "proxmox":
            index, _, key = key.partition("_")
            if not index.isdigit() or not key:
                raise ConfigError(var, "expected PROXBOX_PROXMOX_<INDEX>_<KEY>, e.g. PROXBOX_PROXMOX_0_HOST")
            tables = data.setdefault("proxmox", [])
            if not isinstance(tables, list):
                raise ConfigError("proxmox", "expected an array of tables [[proxmox]]")
            i = int(index)
            if i > len(tables):
                raise ConfigError(var, f"proxmox[{i}] does not exist and is not the next one ({len(tables)})")
            if i == len(tables):
                tables.append({})
            tables[i][key] = value
            from_env.setdefault(f"proxmox[{i}]", set()).add(key)
        elif section in SECTIONS and key:
            data.setdefault(section, {})[key] = value
            from_env.setdefault(section, set()).add(key)
        else:
            raise ConfigError(var, f"unknown setting (sections: {', '.join([*SECTIONS, 'proxmox'])})")
    return from_env


def _read_secret_file(key: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(key, f"cannot read secret file {path!r}: {exc.strerror or exc}") from None
    value = text.strip()
    if not value:
        raise ConfigError(key, f"secret file {path!r} is empty")
    return value


def _validate_url(key: str, url: str) -> None:
    if not url:
        raise ConfigError(key, "is required (e.g. https://netbox.example.com)")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(key, f"must be an http(s) URL, got {url!r}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0, got {value}")


def _finish(settings: Settings) -> Settings:
    """Resolve secret files and check cross-field rules."""
    nb = settings.netbox
    _validate_url("netbox.url", nb.url)
    token = nb.token
    if nb.token_file:
        token = _read_secret_file("netbox.token_file", nb.token_file)
    if not token:
        raise ConfigError("netbox.token", "is required (or netbox.token_file)")
    for name in ("timeout", "concurrency", "bulk_chunk", "retries"):
        _positive(f"netbox.{name}", getattr(nb, name))
    nb = attrs.evolve(nb, token=token.strip(), url=nb.url.rstrip("/"))

    endpoints = []
    names: set[str] = set()
    for i, px in enumerate(settings.proxmox):
        p = f"proxmox[{i}]"
        if not px.host:
            raise ConfigError(f"{p}.host", "is required")
        if not px.user or "@" not in px.user:
            raise ConfigError(f"{p}.user", f"must be user@realm (e.g. netbox@pve), got {px.user!r}")
        token_value = px.token_value
        if px.token_value_file:
            token_value = _read_secret_file(f"{p}.token_value_file", px.token_value_file)
        password = px.password
        if px.password_file:
            password = _read_secret_file(f"{p}.password_file", px.password_file)
        if px.token_name and not token_value:
            raise ConfigError(f"{p}.token_value", "is required with token_name (or token_value_file)")
        if not px.token_name and not password:
            raise ConfigError(f"{p}.token_name", "set token_name + token_value, or password, to authenticate")
        if not 1 <= px.concurrency <= 8:
            raise ConfigError(f"{p}.concurrency", f"must be between 1 and 8, got {px.concurrency}")
        if not 0 < px.port < 65536:
            raise ConfigError(f"{p}.port", f"must be a TCP port, got {px.port}")
        for name in ("timeout", "connect_timeout", "retries"):
            _positive(f"{p}.{name}", getattr(px, name))
        px = attrs.evolve(px, token_value=token_value, password=password, name=px.name or px.host)
        if px.name in names:
            raise ConfigError(f"{p}.name", f"duplicate endpoint name {px.name!r}")
        names.add(px.name)
        endpoints.append(px)

    server = settings.server
    keys = list(server.api_keys)
    if server.api_keys_file:
        text = _read_secret_file("server.api_keys_file", server.api_keys_file)
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not 0 <= server.port < 65536:
        raise ConfigError("server.port", f"must be a TCP port, got {server.port}")
    for name in (
        "heartbeat_s",
        "auth_timeout_s",
        "max_message_bytes",
        "subscriber_buffer",
        "event_log_limit",
    ):
        _positive(f"server.{name}", getattr(server, name))
    for name in ("cancel_grace_s", "close_timeout_s", "retained_runs", "history_limit"):
        _positive(f"server.{name}", getattr(server, name))
    server = attrs.evolve(server, api_keys=tuple(keys))

    sync = settings.sync
    for name in ("include_clusters", "exclude_clusters", "include_nodes", "exclude_nodes"):
        _check_regexes(f"sync.{name}", getattr(sync, name))
    _check_regexes("sync.include_guests", sync.include_guests)
    _check_regexes("sync.exclude_guests", sync.exclude_guests)
    if sync.prune_after_days < 0:
        raise ConfigError("sync.prune_after_days", "must be 0 or more")
    _positive("sync.proxmox_max_in_flight", sync.proxmox_max_in_flight)
    if sync.max_deletes_per_run < 0:
        raise ConfigError("sync.max_deletes_per_run", "must be 0 or more")
    return attrs.evolve(settings, netbox=nb, proxmox=tuple(endpoints), server=server)


def _check_regexes(key: str, patterns: tuple[str, ...]) -> None:
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{key}[{i}]", f"invalid regular expression {pattern!r}: {exc}") from None


def settings_from_dict(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = ""
) -> Settings:
    """Build validated Settings from parsed TOML data plus environment overrides."""
    data = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, Mapping) else v)
        for k, v in data.items()
    }
    if isinstance(data.get("proxmox"), list):
        data["proxmox"] = [dict(t) if isinstance(t, Mapping) else t for t in data["proxmox"]]
    from_env = _env_overrides(env or {}, data)
    unknown = sorted(set(data) - {*SECTIONS, "proxmox"})
    if unknown:
        raise ConfigError(unknown[0], f"unknown section (sections: {', '.join([*SECTIONS, 'proxmox'])})")
    kwargs: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        if section in data:
            kwargs[section] = _build(cls, section, data[section], from_env.get(section, set()))
    raw_px = data.get("proxmox", [])
    if isinstance(raw_px, Mapping):
        raise ConfigError("proxmox", "must be an array of tables: write [[proxmox]], not [proxmox]")
    if not isinstance(raw_px, list):
        raise ConfigError("proxmox", "must be an array of tables [[proxmox]]")
    kwargs["proxmox"] = tuple(
        _build(ProxmoxSettings, f"proxmox[{i}]", t, from_env.get(f"proxmox[{i}]", set()))
        for i, t in enumerate(raw_px)
    )
    return _finish(Settings(source=source, **kwargs))


def config_path(explicit: str | None, env: Mapping[str, str]) -> str:
    return explicit or env.get("PROXBOX_CONFIG") or DEFAULT_CONFIG_PATH


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file at ``path`` (or $PROXBOX_CONFIG, or the default) and apply the environment."""
    env = os.environ if env is None else env
    path = config_path(path, env)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("config", f"file {path} does not exist (use --config or PROXBOX_CONFIG)") from None
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    return settings_from_dict(data, env, source=path)


# ---------------------------------------------------------------------------------------------- output


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret replaced by ``***`` (or empty when unset)."""

    def walk(obj: Any) -> Any:
        if attrs.has(type(obj)):
            out: dict[str, Any] = {}
            for f in attrs.fields(type(obj)):
                if f.metadata.get("internal"):
                    continue
                value = getattr(obj, f.name)
                if f.metadata.get("secret"):
                    if isinstance(value, tuple):
                        out[f.name] = [REDACTED for _ in value]
                    else:
                        out[f.name] = REDACTED if value else ""
                else:
                    out[f.name] = walk(value)
            return out
        if isinstance(obj, tuple):
            return [walk(v) for v in obj]
        return obj

    return walk(settings)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (for log scrubbing and tests)."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        if attrs.has(type(obj)):
            for f in attrs.fields(type(obj)):
                value = getattr(obj, f.name)
                if f.metadata.get("secret"):
                    found.extend(v for v in (value if isinstance(value, tuple) else (value,)) if v)
                else:
                    walk(value)
        elif isinstance(obj, tuple):
            for v in obj:
                walk(v)

    walk(settings)
    return found


def to_toml(data: Mapping[str, Any]) -> str:
    """Render redacted settings as TOML (for ``proxbox config check``)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    for section, body in data.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
            lines.append("")
    return "\n".join(lines)
