"""Client TLS from etcd's flags: the server-side TLS settings of the https client URLs.

etcd serves gRPC, its JSON gateway and /health on one https port behind one TLS config
(`--cert-file`, `--key-file`). ALPN offers "http/1.1" first, then "h2": the server's order
decides, so gRPC clients (which offer only h2, and insist on it) get h2 while curl and other
HTTP clients that offer both get HTTP/1.1, which the gateway and /health speak on this port.
`--client-cert-auth` requires a client certificate signed by `--trusted-ca-file`; as in etcd
3.4, naming a trusted CA alone also requires one. TLS 1.2 is the oldest version accepted, as in
etcd.
"""

from __future__ import annotations

import pathlib
import ssl

from .config import Config


class TLSError(Exception):
    """A certificate, key or CA file that cannot be used; str(e) is the one line main prints."""


def requires_client_cert(config: Config) -> bool:
    return config.client_cert_auth or bool(config.trusted_ca_file)


CLIENT_PORT_ALPN = ("http/1.1", "h2")
METRICS_ALPN = ("http/1.1",)


def server_context(config: Config, alpn: tuple[str, ...] = CLIENT_PORT_ALPN) -> ssl.SSLContext:
    """The TLS settings of the client URLs; TLSError names the file that is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(alpn))
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(
            f"cannot use --cert-file {config.cert_file!r} with --key-file {config.key_file!r}: "
            f"{_reason(exc)}"
        ) from exc
    if requires_client_cert(config):
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if config.trusted_ca_file:
                context.load_verify_locations(cafile=config.trusted_ca_file)
            else:
                context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(
                f"cannot use --trusted-ca-file {config.trusted_ca_file!r}: {_reason(exc)}"
            ) from exc
    return context


def grpc_credentials(config: Config) -> object:
    """The same settings as grpc.aio wants them (PETRA_GRPC=aio), from files server_context
    has already checked."""
    import grpc

    key = pathlib.Path(config.key_file).read_bytes()
    chain = pathlib.Path(config.cert_file).read_bytes()
    root = pathlib.Path(config.trusted_ca_file).read_bytes() if config.trusted_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=root, require_client_auth=requires_client_cert(config)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(getattr(exc, "reason", None) or exc)
