"""The node's configuration: etcd's flags, the matching ETCD_* variables, or a YAML file.

Theory of operation. Every setting has one spelling, etcd's flag name (`snapshot-count`). It
can come from three sources, with etcd's precedence: when `--config-file` (or
`ETCD_CONFIG_FILE`) is given, the YAML file is the only source and every other flag and
variable is ignored; otherwise a flag on the command line wins over its `ETCD_<NAME>` variable,
which wins over etcd's default. Each raw value (a string from argv or the environment, or a
YAML scalar) goes through the one parser of its setting, then the whole `Config` is checked
(`_validate`) the way etcd checks it before starting.

Client TLS is etcd's: https client URLs (and metrics URLs) are served with --cert-file and
--key-file, and --client-cert-auth / --trusted-ca-file ask for client certificates.

etcd flags that petra does not implement (peer TLS, discovery, proxy, ...) are refused with an error
that names them, unless their value is etcd's default: a sample etcd.conf that spells out
`enable-pprof: false` asks for nothing petra lacks, while `cert-file: x.pem` does and must not
be silently dropped. Unknown ETCD_* variables are ignored, as etcd does (it only warns).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml


class ConfigError(Exception):
    """A bad flag, variable, file or value; str(e) is the one line main prints."""


@dataclass(frozen=True, slots=True)
class Config:
    name: str = "default"
    data_dir: str = ""  # "" means f"{name}.petra"; parse() fills it in
    listen_client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    advertise_client_urls: tuple[str, ...] = ("http://127.0.0.1:2379",)
    listen_peer_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    initial_advertise_peer_urls: tuple[str, ...] = ("http://127.0.0.1:2380",)
    # "" means f"{name}={initial_advertise_peer_urls[0]}"; parse() fills it in.
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    snapshot_count: int = 100_000
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    quota_backend_bytes: int = 0  # 0 means 2 GiB; < 0 disables
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"
    max_request_bytes: int = 1_572_864
    max_txn_ops: int = 128
    max_snapshots: int = 5
    max_wals: int = 5
    listen_metrics_urls: tuple[str, ...] = ()
    log_level: str = "info"
    # Client TLS (https client and metrics URLs).
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False


LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
CLUSTER_STATES = ("new", "existing")
COMPACTION_MODES = ("periodic", "revision")
ELECTION_TIMEOUT_MS_MAX = 50_000
CONFIG_FILE_FLAG = "config-file"


def _parse_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f'invalid value "{raw}" for {name}: not an integer')
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip(), 10)
    except ValueError:
        raise ConfigError(f'invalid value "{raw}" for {name}: parse error') from None


def _parse_uint(name: str, raw: Any) -> int:
    value = _parse_int(name, raw)
    if value < 0:
        raise ConfigError(f'invalid value "{raw}" for {name}: must not be negative')
    return value


def _parse_bool(name: str, raw: Any) -> bool:
    value = _canonical(raw).lower()
    if value in ("true", "1", "t"):
        return True
    if value in ("false", "0", "f", ""):
        return False
    raise ConfigError(f'invalid boolean value "{value}" for {name}')


def _parse_str(name: str, raw: Any) -> str:
    if isinstance(raw, dict | list):
        raise ConfigError(f"invalid value for {name}: expected a string")
    return str(raw)


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(name: str, raw: Any) -> str:
        value = _parse_str(name, raw)
        if value not in choices:
            allowed = ", ".join(choices)
            raise ConfigError(f'invalid value "{value}" for {name}: must be one of {allowed}')
        return value

    return parse


def _parse_url(name: str, raw: str, https: bool = False) -> str:
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme == "https" and not https:
        raise ConfigError(f'{name} "{url}": https (TLS) is not supported by petra')
    if parts.scheme not in ("http", "https"):
        scheme = "http or https" if https else "http"
        raise ConfigError(f'invalid value "{url}" for {name}: URL scheme must be {scheme}')
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f'invalid value "{url}" for {name}: bad port') from None
    if not parts.hostname or port is None:
        raise ConfigError(f'invalid value "{url}" for {name}: expected http://host:port')
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f'invalid value "{url}" for {name}: URL must not have a path')
    return url


def _parse_urls(name: str, raw: Any, https: bool = False) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else _parse_str(name, raw).split(",")
    urls = tuple(_parse_url(name, str(item), https) for item in items if str(item).strip())
    return urls


def _parse_optional_urls(name: str, raw: Any) -> tuple[str, ...]:
    return _parse_urls(name, raw)


def _parse_required_urls(name: str, raw: Any) -> tuple[str, ...]:
    urls = _parse_urls(name, raw)
    if not urls:
        raise ConfigError(f"invalid value for {name}: at least one URL is required")
    return urls


def _parse_client_urls(name: str, raw: Any) -> tuple[str, ...]:
    """Client and metrics URLs: http, or https with the client TLS files."""
    urls = _parse_urls(name, raw, https=True)
    if not urls:
        raise ConfigError(f"invalid value for {name}: at least one URL is required")
    return urls


def _parse_optional_client_urls(name: str, raw: Any) -> tuple[str, ...]:
    return _parse_urls(name, raw, https=True)


# flag name -> (Config field, parser). The flag name is also the YAML key, and the variable is
# ETCD_ + the name upper-cased with '-' -> '_'.
Parser = Callable[[str, Any], Any]
FLAGS: dict[str, tuple[str, Parser]] = {
    "name": ("name", _parse_str),
    "data-dir": ("data_dir", _parse_str),
    "listen-client-urls": ("listen_client_urls", _parse_client_urls),
    "advertise-client-urls": ("advertise_client_urls", _parse_client_urls),
    "listen-peer-urls": ("listen_peer_urls", _parse_required_urls),
    "initial-advertise-peer-urls": ("initial_advertise_peer_urls", _parse_required_urls),
    "initial-cluster": ("initial_cluster", _parse_str),
    "initial-cluster-state": ("initial_cluster_state", _choice(CLUSTER_STATES)),
    "initial-cluster-token": ("initial_cluster_token", _parse_str),
    "snapshot-count": ("snapshot_count", _parse_uint),
    "heartbeat-interval": ("heartbeat_interval_ms", _parse_uint),
    "election-timeout": ("election_timeout_ms", _parse_uint),
    "quota-backend-bytes": ("quota_backend_bytes", _parse_int),
    "auto-compaction-mode": ("auto_compaction_mode", _choice(COMPACTION_MODES)),
    "auto-compaction-retention": ("auto_compaction_retention", _parse_str),
    "max-request-bytes": ("max_request_bytes", _parse_uint),
    "max-txn-ops": ("max_txn_ops", _parse_uint),
    "max-snapshots": ("max_snapshots", _parse_uint),
    "max-wals": ("max_wals", _parse_uint),
    "listen-metrics-urls": ("listen_metrics_urls", _parse_optional_client_urls),
    "log-level": ("log_level", _choice(LOG_LEVELS)),
    "cert-file": ("cert_file", _parse_str),
    "key-file": ("key_file", _parse_str),
    "trusted-ca-file": ("trusted_ca_file", _parse_str),
    "client-cert-auth": ("client_cert_auth", _parse_bool),
}

# etcd 3.4 flags petra does not implement, with the values that ask for nothing more than
# petra does (etcd's defaults, in every spelling etcd.conf files use). Any other value is
# refused. `logger` and `log-outputs` only choose etcd's log format and destination.
UNSUPPORTED: dict[str, tuple[str, ...]] = {
    "wal-dir": ("",),
    "initial-election-tick-advance": ("true",),
    "backend-batch-interval": ("", "0", "0s"),
    "backend-batch-limit": ("0",),
    "max-concurrent-streams": ("4294967295",),
    "grpc-keepalive-min-time": ("5s",),
    "grpc-keepalive-interval": ("2h", "2h0m0s"),
    "grpc-keepalive-timeout": ("20s",),
    "discovery": ("",),
    "discovery-fallback": ("proxy",),
    "discovery-proxy": ("",),
    "discovery-srv": ("",),
    "discovery-srv-name": ("",),
    "strict-reconfig-check": ("true",),
    "pre-vote": ("false",),
    "enable-v2": ("false",),
    "client-crl-file": ("",),
    "client-cert-allowed-hostname": ("",),
    "auto-tls": ("false",),
    "peer-cert-file": ("",),
    "peer-key-file": ("",),
    "peer-client-cert-auth": ("false",),
    "peer-trusted-ca-file": ("",),
    "peer-cert-allowed-cn": ("",),
    "peer-cert-allowed-hostname": ("",),
    "peer-auto-tls": ("false",),
    "peer-crl-file": ("",),
    "cipher-suites": ("",),
    "cors": ("*", ""),
    "host-whitelist": ("*", ""),
    "auth-token": ("simple",),
    "bcrypt-cost": ("10",),
    "auth-token-ttl": ("300",),
    "enable-pprof": ("false",),
    "metrics": ("basic",),
    "logger": ("capnslog", "zap"),
    "log-outputs": ("default", "stderr"),
    "proxy": ("off",),
    "proxy-failure-wait": ("5000",),
    "proxy-refresh-interval": ("30000",),
    "proxy-dial-timeout": ("1000",),
    "proxy-write-timeout": ("5000",),
    "proxy-read-timeout": ("0",),
    "experimental-initial-corrupt-check": ("false",),
    "experimental-corrupt-check-time": ("0", "0s"),
    "experimental-enable-v2v3": ("",),
    "experimental-backend-bbolt-freelist-type": ("map",),
    "experimental-enable-lease-checkpoint": ("false",),
    "experimental-compaction-batch-limit": ("1000",),
    "experimental-peer-skip-client-san-verification": ("false",),
    "experimental-watch-progress-notify-interval": ("10m", "10m0s"),
    "experimental-warning-apply-duration": ("100ms",),
    "force-new-cluster": ("false",),
    "unsafe-no-fsync": ("false",),
    "debug": ("false",),
    "log-package-levels": ("",),
}

# Go's flag package lets a boolean flag stand alone (`--pre-vote` means true).
BOOL_FLAGS = frozenset(k for k, v in UNSUPPORTED.items() if v[0] in ("true", "false")) | {
    "client-cert-auth"
}

# YAML sections of etcd's config file; each key inside is checked like a flag of that name.
TLS_SECTIONS = ("client-transport-security", "peer-transport-security")


def env_name(flag: str) -> str:
    return "ETCD_" + flag.upper().replace("-", "_")


def _canonical(raw: Any) -> str:
    """The string form of a raw value, as Go would print it (YAML gives bools and ints)."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, list):
        return ",".join(_canonical(item) for item in raw)
    return str(raw).strip()


def _check_unsupported(flag: str, raw: Any, source: str) -> None:
    value = _canonical(raw)
    if value not in UNSUPPORTED[flag]:
        raise ConfigError(f'{source} "{value}": this etcd setting is not supported by petra')


def _split_argv(argv: Sequence[str]) -> dict[str, str]:
    """Go flag syntax: -f, --f, -f=v, --f v (booleans take no separate value)."""
    given: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"'{arg}' is not a valid flag")
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, eq, value = body.partition("=")
        if name not in FLAGS and name not in UNSUPPORTED and name != CONFIG_FILE_FLAG:
            raise ConfigError(f"flag provided but not defined: -{name}")
        if not eq:
            if name in BOOL_FLAGS:
                value = "true"
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise ConfigError(f"flag needs an argument: -{name}")
        if name in given:
            raise ConfigError(f"flag --{name} given more than once")
        given[name] = value
        i += 1
    return given


def _from_env(environ: Mapping[str, str], given: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Settings from ETCD_* variables not shadowed by a flag: flag -> (value, variable)."""
    found: dict[str, tuple[str, str]] = {}
    for flag in (*FLAGS, *UNSUPPORTED):
        var = env_name(flag)
        if var in environ and flag not in given:
            found[flag] = (environ[var], var)
    return found


def _load_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file {path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of flag names to values")
    return data


def _settings_from_yaml(path: str) -> dict[str, tuple[Any, str]]:
    settings: dict[str, tuple[Any, str]] = {}
    for key, raw in _load_yaml(path).items():
        key = str(key)
        source = f"{path}: {key}"
        if key in TLS_SECTIONS:
            for sub, sub_raw in (raw or {}).items():
                sub_source = f"{path}: {key}.{sub}"
                if key == "client-transport-security" and sub in FLAGS:
                    if sub_raw is not None:
                        settings[sub] = (sub_raw, sub_source)
                    continue
                if sub not in UNSUPPORTED:
                    raise ConfigError(f"{sub_source}: unknown key")
                _check_unsupported(sub, sub_raw, sub_source)
        elif key in UNSUPPORTED:
            _check_unsupported(key, raw, source)
        elif key in FLAGS:
            if raw is not None:  # an empty key means "not set", as in etcd's sample file
                settings[key] = (raw, source)
        else:
            raise ConfigError(f"{source}: unknown key")
    return settings


def _apply(settings: Mapping[str, tuple[Any, str]]) -> Config:
    values: dict[str, Any] = {}
    for flag, (raw, source) in settings.items():
        if flag in UNSUPPORTED:
            _check_unsupported(flag, raw, source)
            continue
        field, parser = FLAGS[flag]
        values[field] = parser(source, raw)
    return Config(**values)


def _resolve_defaults(cfg: Config) -> Config:
    data_dir = cfg.data_dir or f"{cfg.name}.petra"
    cluster = cfg.initial_cluster or f"{cfg.name}={cfg.initial_advertise_peer_urls[0]}"
    return dataclasses.replace(cfg, data_dir=data_dir, initial_cluster=cluster)


def parse_initial_cluster(text: str) -> dict[str, tuple[str, ...]]:
    """`a=http://h:1,a=http://h:2,b=...` -> {name: peer URLs}, in order."""
    members: dict[str, list[str]] = {}
    for item in text.split(","):
        name, eq, url = item.strip().partition("=")
        if not eq or not name:
            raise ConfigError(f'invalid value "{text}" for initial-cluster: expected name=URL')
        members.setdefault(name, []).append(_parse_url("initial-cluster", url))
    return {name: tuple(urls) for name, urls in members.items()}


def _validate(cfg: Config, explicit: set[str]) -> None:
    if "listen-client-urls" in explicit and "advertise-client-urls" not in explicit:
        raise ConfigError(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        )
    if cfg.heartbeat_interval_ms == 0:
        raise ConfigError("--heartbeat-interval must be greater than 0")
    if 5 * cfg.heartbeat_interval_ms > cfg.election_timeout_ms:
        raise ConfigError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] should be at least as 5 times "
            f"as --heartbeat-interval[{cfg.heartbeat_interval_ms}ms]"
        )
    if cfg.election_timeout_ms > ELECTION_TIMEOUT_MS_MAX:
        raise ConfigError(
            f"--election-timeout[{cfg.election_timeout_ms}ms] is too long, "
            f"and should be set less than {ELECTION_TIMEOUT_MS_MAX}ms"
        )
    for flag, value in (
        ("max-request-bytes", cfg.max_request_bytes),
        ("max-txn-ops", cfg.max_txn_ops),
    ):
        if value == 0:
            raise ConfigError(f"--{flag} must be greater than 0")
    if not cfg.name:
        raise ConfigError("--name must not be empty")
    _validate_tls(cfg)
    _validate_retention(cfg)
    _validate_cluster(cfg)


def _validate_tls(cfg: Config) -> None:
    """etcd's checks and words (an http URL with TLS files is served in the clear, as etcd
    does after a warning)."""
    for url in (*cfg.listen_client_urls, *cfg.listen_metrics_urls):
        if not url.startswith("https:"):
            continue
        if bool(cfg.cert_file) != bool(cfg.key_file):
            raise ConfigError(
                "KeyFile and CertFile must both be present"
                f"[key: {cfg.key_file}, cert: {cfg.cert_file}]"
            )
        if not cfg.cert_file:
            raise ConfigError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} "
                "with HTTPS scheme"
            )


def _validate_retention(cfg: Config) -> None:
    text = cfg.auto_compaction_retention.strip()
    if cfg.auto_compaction_mode == "revision":
        if not text.isdigit():
            raise ConfigError(
                f'invalid auto-compaction-retention "{text}": revision mode needs a '
                "non-negative integer"
            )
        return
    if not _is_duration(text):
        raise ConfigError(
            f'invalid auto-compaction-retention "{text}": expected hours (e.g. 1) or a '
            "duration (e.g. 30m, 1h30m)"
        )


def _is_duration(text: str) -> bool:
    """A bare number of hours, or a Go duration made of h, m, s, ms parts."""
    if text.isdigit():
        return True
    rest = text
    units = ("ms", "h", "m", "s")
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789."))
        if digits == 0:
            return False
        rest = rest[digits:]
        unit = next((u for u in units if rest.startswith(u)), None)
        if unit is None:
            return False
        rest = rest[len(unit) :]
    return bool(text)


def _validate_cluster(cfg: Config) -> None:
    members = parse_initial_cluster(cfg.initial_cluster)
    if cfg.name not in members:
        raise ConfigError(
            f'couldn\'t find local name "{cfg.name}" in the initial cluster configuration'
        )
    if len(members) > 1:
        raise ConfigError("initial-cluster: petra runs one-member clusters only for now")
    if set(members[cfg.name]) != set(cfg.initial_advertise_peer_urls):
        raise ConfigError(
            f"--initial-cluster has {cfg.name}={','.join(members[cfg.name])} but missing from "
            f"--initial-advertise-peer-urls={','.join(cfg.initial_advertise_peer_urls)}"
        )


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config from command-line flags (without argv[0]) and the environment."""
    environ = os.environ if environ is None else environ
    given = _split_argv(argv)
    config_file = given.get(CONFIG_FILE_FLAG) or environ.get(env_name(CONFIG_FILE_FLAG), "")
    if config_file:
        settings = _settings_from_yaml(config_file)
    else:
        settings = {flag: (value, f"--{flag}") for flag, value in given.items()}
        for flag, (value, var) in _from_env(environ, given).items():
            settings[flag] = (value, var)
    cfg = _resolve_defaults(_apply(settings))
    _validate(cfg, set(settings))
    return cfg
