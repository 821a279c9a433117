"""server.config: etcd's flags, ETCD_* variables and --config-file YAML, and their errors."""

from __future__ import annotations

import pathlib

import pytest

from server.config import Config, ConfigError, parse

ONE_NODE = [
    "--name",
    "n1",
    "--listen-client-urls",
    "http://127.0.0.1:3379",
    "--advertise-client-urls",
    "http://127.0.0.1:3379",
    "--listen-peer-urls",
    "http://127.0.0.1:3380",
    "--initial-advertise-peer-urls",
    "http://127.0.0.1:3380",
    "--initial-cluster",
    "n1=http://127.0.0.1:3380",
]


def test_defaults_are_etcds() -> None:
    """No flags and no variables: etcd's defaults, data in ./default.petra."""
    cfg = parse([], {})
    assert cfg.name == "default"
    assert cfg.data_dir == "default.petra"
    assert cfg.listen_client_urls == ("http://127.0.0.1:2379",)
    assert cfg.advertise_client_urls == ("http://127.0.0.1:2379",)
    assert cfg.initial_cluster == "default=http://127.0.0.1:2380"
    assert cfg.snapshot_count == 100_000
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == (100, 1000)
    assert (cfg.max_request_bytes, cfg.max_txn_ops) == (1_572_864, 128)
    assert cfg.listen_metrics_urls == ()
    assert parse([], {}) == Config(data_dir="default.petra", initial_cluster=cfg.initial_cluster)


def test_name_moves_the_default_data_dir_and_cluster() -> None:
    """--name n alone gives data dir n.petra and initial cluster n=<peer url>, as etcd does."""
    cfg = parse(["--name", "infra1"], {})
    assert cfg.data_dir == "infra1.petra"
    assert cfg.initial_cluster == "infra1=http://127.0.0.1:2380"


def test_every_flag_syntax_of_go() -> None:
    """-f v, --f v, -f=v and --f=v all set the flag."""
    for argv in (
        ["-snapshot-count", "7"],
        ["--snapshot-count", "7"],
        ["-snapshot-count=7"],
        ["--snapshot-count=7"],
    ):
        assert parse(argv, {}).snapshot_count == 7, argv


def test_all_flags_parse() -> None:
    """Every implemented flag reaches its field with the right type."""
    argv = [
        *ONE_NODE,
        "--data-dir=/tmp/d",
        "--initial-cluster-state=existing",
        "--initial-cluster-token=tok",
        "--snapshot-count=10",
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--quota-backend-bytes=-1",
        "--auto-compaction-mode=revision",
        "--auto-compaction-retention=1000",
        "--max-request-bytes=2048",
        "--max-txn-ops=3",
        "--max-snapshots=0",
        "--max-wals=2",
        "--listen-metrics-urls=http://127.0.0.1:9000,http://127.0.0.1:9001",
        "--log-level=debug",
    ]
    cfg = parse(argv, {})
    assert cfg == Config(
        name="n1",
        data_dir="/tmp/d",
        listen_client_urls=("http://127.0.0.1:3379",),
        advertise_client_urls=("http://127.0.0.1:3379",),
        listen_peer_urls=("http://127.0.0.1:3380",),
        initial_advertise_peer_urls=("http://127.0.0.1:3380",),
        initial_cluster="n1=http://127.0.0.1:3380",
        initial_cluster_state="existing",
        initial_cluster_token="tok",
        snapshot_count=10,
        heartbeat_interval_ms=50,
        election_timeout_ms=500,
        quota_backend_bytes=-1,
        auto_compaction_mode="revision",
        auto_compaction_retention="1000",
        max_request_bytes=2048,
        max_txn_ops=3,
        max_snapshots=0,
        max_wals=2,
        listen_metrics_urls=("http://127.0.0.1:9000", "http://127.0.0.1:9001"),
        log_level="debug",
    )


def test_environment_variables() -> None:
    """ETCD_* variables set the matching flags; a flag on the command line shadows its variable."""
    env = {
        "ETCD_NAME": "envname",
        "ETCD_DATA_DIR": "/var/lib/petra",
        "ETCD_SNAPSHOT_COUNT": "42",
        "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1,http://127.0.0.1:2",
        "ETCD_ADVERTISE_CLIENT_URLS": "http://127.0.0.1:1",
        "ETCD_UNKNOWN_THING": "ignored like etcd does",
        "ETCDCTL_API": "3",
    }
    cfg = parse(["--snapshot-count", "5"], env)
    assert cfg.name == "envname"
    assert cfg.data_dir == "/var/lib/petra"
    assert cfg.snapshot_count == 5
    assert cfg.listen_client_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    assert cfg.initial_cluster == "envname=http://127.0.0.1:2380"


def test_seed_article_etcd_conf() -> None:
    """The seed article's /etc/etcd.conf (ETCD_NAME, ETCD_DATA_DIR) works unchanged."""
    cfg = parse([], {"ETCD_NAME": "centos7", "ETCD_DATA_DIR": "/var/lib/etcd/"})
    assert (cfg.name, cfg.data_dir) == ("centos7", "/var/lib/etcd/")


def test_config_file_yaml_ignores_flags_and_env(tmp_path: pathlib.Path) -> None:
    """With --config-file, the YAML is the only source: flags and variables are ignored."""
    path = tmp_path / "etcd.yml"
    path.write_text(
        "name: yml\n"
        "data-dir: /data/yml\n"
        "snapshot-count: 500\n"
        "heartbeat-interval: 200\n"
        "election-timeout: 2000\n"
        "listen-client-urls: http://127.0.0.1:4001,http://127.0.0.1:4002\n"
        "advertise-client-urls: http://127.0.0.1:4001\n"
        "initial-cluster-state: 'new'\n"
        "auto-compaction-retention: 1\n"
        "wal-dir:\n"
        "enable-pprof: false\n"
        "proxy: 'off'\n"
        "enable-v2: false\n"
        "max-txn-ops:\n"
        "client-transport-security:\n"
        "  cert-file:\n"
        "  client-cert-auth: false\n"
        "  auto-tls: false\n"
    )
    env = {"ETCD_NAME": "env", "ETCD_SNAPSHOT_COUNT": "9"}
    cfg = parse(["--config-file", str(path), "--snapshot-count", "3"], env)
    assert cfg.name == "yml"
    assert cfg.data_dir == "/data/yml"
    assert cfg.snapshot_count == 500
    assert (cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == (200, 2000)
    assert cfg.listen_client_urls == ("http://127.0.0.1:4001", "http://127.0.0.1:4002")
    assert cfg.auto_compaction_retention == "1"
    assert cfg.max_txn_ops == 128


def test_config_file_from_env(tmp_path: pathlib.Path) -> None:
    """ETCD_CONFIG_FILE works like --config-file."""
    path = tmp_path / "c.yaml"
    path.write_text("name: fromfile\n")
    assert parse([], {"ETCD_CONFIG_FILE": str(path)}).name == "fromfile"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--foo"], {}, "flag provided but not defined: -foo"),
        (["--snapshot-count=abc"], {}, 'invalid value "abc" for --snapshot-count: parse error'),
        ([], {"ETCD_SNAPSHOT_COUNT": "x"}, 'invalid value "x" for ETCD_SNAPSHOT_COUNT'),
        (["--snapshot-count"], {}, "flag needs an argument: -snapshot-count"),
        (["positional"], {}, "'positional' is not a valid flag"),
        (["--max-wals=-1"], {}, "must not be negative"),
        (["--log-level=loud"], {}, 'invalid value "loud" for --log-level'),
        (["--initial-cluster-state=old"], {}, "must be one of new, existing"),
        (["--auto-compaction-mode=daily"], {}, "must be one of periodic, revision"),
        (["--auto-compaction-retention=soon"], {}, 'invalid auto-compaction-retention "soon"'),
        (
            ["--auto-compaction-mode=revision", "--auto-compaction-retention=1h"],
            {},
            "revision mode needs a non-negative integer",
        ),
        (
            ["--listen-client-urls=http://127.0.0.1:1"],
            {},
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
        ),
        (
            ["--election-timeout=100"],
            {},
            "--election-timeout[100ms] should be at least as 5 times as "
            "--heartbeat-interval[100ms]",
        ),
        (["--election-timeout=60000"], {}, "is too long"),
        (["--heartbeat-interval=0"], {}, "--heartbeat-interval must be greater than 0"),
        (["--max-txn-ops=0"], {}, "--max-txn-ops must be greater than 0"),
        (["--listen-metrics-urls=localhost:9"], {}, "URL scheme must be http"),
        (["--listen-metrics-urls=http://127.0.0.1"], {}, "expected http://host:port"),
        (["--listen-metrics-urls=http://127.0.0.1:9/x"], {}, "must not have a path"),
        (["--listen-peer-urls=https://127.0.0.1:9"], {}, "https (TLS) is not supported"),
        (
            ["--listen-client-urls=https://127.0.0.1:9", "--advertise-client-urls=https://x:9"],
            {},
            "TLS key/cert (--cert-file, --key-file) must be provided for client url "
            "https://127.0.0.1:9 with HTTPS scheme",
        ),
        (
            ["--listen-client-urls=https://127.0.0.1:9", "--advertise-client-urls=https://x:9"],
            {"ETCD_CERT_FILE": "s.pem"},
            "KeyFile and CertFile must both be present[key: , cert: s.pem]",
        ),
        (
            ["--listen-metrics-urls=https://127.0.0.1:9"],
            {},
            "must be provided for client url https://127.0.0.1:9 with HTTPS scheme",
        ),
        (["--client-cert-auth=maybe"], {}, 'invalid boolean value "maybe" for --client-cert-auth'),
        (["--peer-cert-file=p.pem"], {}, '--peer-cert-file "p.pem": this etcd setting is not'),
        (["--pre-vote"], {}, '--pre-vote "true": this etcd setting is not supported by petra'),
        ([], {"ETCD_AUTO_TLS": "true"}, 'ETCD_AUTO_TLS "true": this etcd setting is not'),
        (["--name=a", "--name=b"], {}, "flag --name given more than once"),
        (
            ["--name=a", "--initial-cluster=b=http://127.0.0.1:2380"],
            {},
            'couldn\'t find local name "a" in the initial cluster configuration',
        ),
        (
            ["--initial-cluster=default=http://127.0.0.1:2380,b=http://127.0.0.1:2390"],
            {},
            "one-member clusters only",
        ),
        (["--initial-cluster=default=http://127.0.0.1:9"], {}, "missing from"),
        (["--initial-cluster=garbage"], {}, "expected name=URL"),
    ],
)
def test_bad_flags_and_values(argv: list[str], env: dict[str, str], message: str) -> None:
    """Each bad flag, variable or value raises ConfigError with a clear one-line message."""
    with pytest.raises(ConfigError) as info:
        parse(argv, env)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_unsupported_flag_at_its_default_is_accepted() -> None:
    """An unimplemented etcd flag set to etcd's default asks for nothing and is accepted."""
    argv = ["--enable-v2=false", "--strict-reconfig-check", "--logger=zap", "--cors=*"]
    assert parse(argv, {"ETCD_PRE_VOTE": "false"}) == parse([], {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [a, b]\n", "expected a string"),
        ("nmae: typo\n", "nmae: unknown key"),
        ("snapshot-count: many\n", 'invalid value "many"'),
        ("snapshot-count: true\n", "not an integer"),
        (
            "client-transport-security:\n  client-crl-file: c.pem\n",
            "client-transport-security.client-crl-file",
        ),
        ("peer-transport-security:\n  bogus: 1\n", "peer-transport-security.bogus: unknown key"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "invalid YAML at line"),
        ("force-new-cluster: true\n", "this etcd setting is not supported by petra"),
    ],
)
def test_bad_config_files(tmp_path: pathlib.Path, text: str, message: str) -> None:
    """A bad YAML file is refused with the file, the key and the reason on one line."""
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse(["--config-file", str(path)], {})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: pathlib.Path) -> None:
    """A config file that cannot be read is named in the error."""
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigError, match="cannot read config file .*absent.yml"):
        parse([f"--config-file={path}"], {})


def test_empty_config_file_gives_defaults(tmp_path: pathlib.Path) -> None:
    """An empty YAML file means every default."""
    path = tmp_path / "empty.yml"
    path.write_text("")
    assert parse(["--config-file", str(path)], {}) == parse([], {})


def test_client_tls_settings(tmp_path: pathlib.Path) -> None:
    """Client TLS from flags (a lone --client-cert-auth means true), from ETCD_* variables, and
    from the YAML file's client-transport-security section; https client URLs are accepted
    with a cert and key."""
    https = ["--listen-client-urls=https://127.0.0.1:9", "--advertise-client-urls=https://h:9"]
    cfg = parse([*https, "--cert-file=s.pem", "--key-file=s.key", "--client-cert-auth"], {})
    assert (cfg.cert_file, cfg.key_file, cfg.client_cert_auth) == ("s.pem", "s.key", True)
    assert cfg.listen_client_urls == ("https://127.0.0.1:9",)
    env = {"ETCD_CERT_FILE": "e.pem", "ETCD_KEY_FILE": "e.key", "ETCD_TRUSTED_CA_FILE": "ca.pem"}
    cfg = parse(https, env)
    assert (cfg.cert_file, cfg.trusted_ca_file, cfg.client_cert_auth) == ("e.pem", "ca.pem", False)
    path = tmp_path / "tls.yml"
    path.write_text(
        "listen-client-urls: https://127.0.0.1:9\n"
        "advertise-client-urls: https://h:9\n"
        "client-transport-security:\n"
        "  cert-file: y.pem\n"
        "  key-file: y.key\n"
        "  client-cert-auth: true\n"
        "  trusted-ca-file: ca.pem\n"
        "  auto-tls: false\n"
    )
    cfg = parse(["--config-file", str(path)], {})
    assert (cfg.cert_file, cfg.key_file) == ("y.pem", "y.key")
    assert (cfg.client_cert_auth, cfg.trusted_ca_file) == (True, "ca.pem")
