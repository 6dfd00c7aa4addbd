"""Transport security for every grm server and client: TLS, mutual TLS and a bearer token.

One place builds what each side needs, so every dial site (client SDK, aggregator → samplers
and principle generator, the aggregator's HTTP loopback, `grm up`, `grm score --target`)
and every server behave the same:

- `ServerTls` — a certificate and key (PEM files); with a client CA the server also requires
  client certificates signed by it (mutual TLS).
- `ClientSecurity` — how to dial: TLS roots (a CA bundle, or the system's), an optional
  client certificate for mutual TLS, an optional server-name override (pods are dialled by
  IP, their certificate names a service), and the bearer token sent as `authorization`
  metadata on every call.

Files are read at startup; a missing or unreadable file is a `SecurityConfigError` that names
the option, so a misconfigured pod fails at once rather than on its first call. After that
they are re-read when they change on disk (`Reloading`): a Kubernetes Secret volume update
swaps its `..data` symlink, and the next TLS handshake (the server's certificate, key and
client CA, through gRPC's dynamic certificate configuration) and the next call (the bearer
token, on both sides) use the new material; connections already open keep theirs and finish.
A changed file that cannot be used (half written, not PEM, a key that does not match the
certificate) is logged and the last good material stays. Tokens never appear in a repr or a
log line.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTH_METADATA_KEY = "authorization"
BEARER = "bearer "
# Methods that answer without a token: kubelet probes and load balancers send no metadata,
# and reflection only describes the public protos.
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class SecurityConfigError(ValueError):
    """A TLS or token setting that cannot be used; the message names the option."""


def read_pem(path: str, option: str) -> bytes:
    """The PEM file `path`, or a SecurityConfigError naming `option`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise SecurityConfigError(f"{option}: {path} is not a PEM file")
    return data


def read_token(path: str, option: str) -> str:
    """A token file's content without surrounding whitespace (Secrets often end in a newline)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecurityConfigError(f"{option}: cannot read {path}: {why}") from None
    if not token:
        raise SecurityConfigError(f"{option}: {path} is empty")
    return _check_token(token, option)


def _check_token(token: str, option: str) -> str:
    if any(c.isspace() for c in token) or not token.isprintable():
        raise SecurityConfigError(f"{option}: the token must be printable, without whitespace")
    return token


def resolve_token(
    token_file: str | None,
    environ: Mapping[str, str],
    *,
    file_option: str = "--auth-token-file",
    env_name: str = "GRM_AUTH_TOKEN",
) -> str | None:
    """The token from its file option, else from the environment variable, else None."""
    if token_file:
        return read_token(token_file, file_option)
    value = environ.get(env_name, "").strip()
    return _check_token(value, env_name) if value else None


# --- files that change on disk -------------------------------------------------------------------

Stamp = tuple[tuple[int, int, int, int] | None, ...]


def _stamp(paths: Sequence[str]) -> Stamp:
    """What identifies the files' current content without reading them (stat follows the
    Secret volume's symlinks, so a swapped `..data` shows as a new inode)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class Reloading(Generic[T]):
    """A value made from files, made again when any of them changes.

    `load()` reads the files; it runs at construction (a failure there is the caller's startup
    error) and again whenever the files' stat changes. A reload that fails keeps the last good
    value and is logged once per change. Thread-safe: gRPC calls the server's certificate
    fetcher from its own threads.
    """

    def __init__(self, paths: Sequence[str], load: Callable[[], T], *, what: str) -> None:
        self.paths = tuple(paths)
        self.what = what
        self._load = load
        self._lock = threading.Lock()
        self._stamp = _stamp(self.paths)
        self._value = load()
        self._failed: Stamp | None = None
        self.version = 0  # bumped on every successful reload

    def get(self) -> T:
        """The current value, reloaded first if the files changed."""
        stamp = _stamp(self.paths)
        if stamp == self._stamp:
            return self._value
        with self._lock:
            if stamp != self._stamp and stamp != self._failed:
                try:
                    value = self._load()
                except (SecurityConfigError, OSError, ssl.SSLError, ValueError) as exc:
                    self._failed = stamp
                    log.warning(
                        "%s changed but cannot be used; keeping the last: %s", self.what, exc
                    )
                else:
                    self._value, self._stamp, self._failed = value, stamp, None
                    self.version += 1
                    log.info("%s reloaded", self.what)
            return self._value


class TokenSource:
    """The current bearer token: fixed, or a token file's content re-read when it changes."""

    def __init__(
        self, token: str | None = None, *, path: str | None = None, option: str = ""
    ) -> None:
        self._fixed = token
        self._file = (
            Reloading([path], lambda: read_token(path, option), what=f"{option or 'token'} file")
            if path
            else None
        )

    def __repr__(self) -> str:
        return "TokenSource(<token>)"

    def __call__(self) -> str | None:
        return self._file.get() if self._file is not None else self._fixed


# --- server side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """A server's certificate chain and key; a client CA turns on mutual TLS."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = field(default=None, repr=False)
    # Where they came from: given, the files are watched and re-read when they change.
    cert_path: str | None = None
    key_path: str | None = None
    client_ca_path: str | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca_pem is not None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_path, self.key_path, self.client_ca_path) if p)

    def reloading(self) -> Reloading[ServerTls]:
        """This TLS material, re-read from its files when they change."""
        if self.cert_path is None or self.key_path is None:
            raise ValueError("ServerTls without files cannot be reloaded")
        cert, key, ca = self.cert_path, self.key_path, self.client_ca_path

        def load() -> ServerTls:
            fresh = ServerTls.load(cert, key, ca)
            assert fresh is not None
            return fresh

        return Reloading(self.paths, load, what="TLS certificate/key/CA")

    @classmethod
    def load(
        cls,
        cert: str | None,
        key: str | None,
        client_ca: str | None = None,
        *,
        names: tuple[str, str, str] = ("--tls-cert", "--tls-key", "--tls-client-ca"),
    ) -> ServerTls | None:
        """From PEM files; None when no certificate is configured (plaintext)."""
        cert_opt, key_opt, ca_opt = names
        if not cert and not key:
            if client_ca:
                raise SecurityConfigError(f"{ca_opt} needs {cert_opt} and {key_opt}")
            return None
        if not cert or not key:
            missing = cert_opt if not cert else key_opt
            raise SecurityConfigError(
                f"TLS needs both {cert_opt} and {key_opt}: {missing} is unset"
            )
        cert_pem, key_pem = read_pem(cert, cert_opt), read_pem(key, key_opt)
        _check_pair(cert, key, cert_opt, key_opt)
        return cls(
            cert_pem=cert_pem,
            key_pem=key_pem,
            client_ca_pem=read_pem(client_ca, ca_opt) if client_ca else None,
            cert_path=cert,
            key_path=key,
            client_ca_path=client_ca or None,
        )

    def certificate_configuration(self) -> Any:
        return grpc.ssl_server_certificate_configuration(
            [(self.key_pem, self.cert_pem)], root_certificates=self.client_ca_pem
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Fixed material, or (loaded from files) gRPC's dynamic certificate configuration:
        its fetcher runs before every new TLS handshake and hands over new material when the
        files changed, so rotation needs no restart and open connections are untouched."""
        if not self.paths:
            return grpc.ssl_server_credentials(
                [(self.key_pem, self.cert_pem)],
                root_certificates=self.client_ca_pem,
                require_client_auth=self.mutual,
            )
        source = self.reloading()
        served = [source.version]

        def fetch() -> Any:
            current = source.get()
            if source.version == served[0]:
                return None  # unchanged: gRPC keeps the configuration it has
            served[0] = source.version
            return current.certificate_configuration()

        return grpc.dynamic_ssl_server_credentials(
            self.certificate_configuration(), fetch, require_client_authentication=self.mutual
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A server SSLContext (the HTTP endpoint) that follows the files as gRPC does."""
        source = self.reloading() if self.paths else None
        contexts: dict[int, ssl.SSLContext] = {}

        def context_of(tls: ServerTls) -> ssl.SSLContext:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            assert tls.cert_path is not None and tls.key_path is not None
            ctx.load_cert_chain(tls.cert_path, tls.key_path)
            if tls.client_ca_pem is not None:
                ctx.load_verify_locations(cadata=tls.client_ca_pem.decode("ascii"))
                ctx.verify_mode = ssl.CERT_REQUIRED
            return ctx

        if source is None:
            raise ValueError("the HTTP endpoint needs TLS loaded from files")
        first = context_of(source.get())
        contexts[source.version] = first

        def on_hello(sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            tls = source.get()  # every handshake: the newest good material
            if source.version not in contexts:
                contexts.clear()
                contexts[source.version] = context_of(tls)
                contexts[source.version].sni_callback = on_hello
            sock.context = contexts[source.version]

        first.sni_callback = on_hello
        return first


def _check_pair(cert: str, key: str, cert_opt: str, key_opt: str) -> None:
    """The key must belong to the certificate (a rotation half done would break every
    handshake: the last good pair is kept instead)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise SecurityConfigError(
            f"{key_opt} does not match {cert_opt} ({cert}, {key}): {exc}"
        ) from None


def bearer_ok(metadata: Sequence[tuple[str, Any]] | None, token: str) -> bool:
    """Whether the call carries `authorization: Bearer <token>` (constant-time compare)."""
    expected = token.encode("utf-8")
    for key, value in metadata or ():
        if key.lower() != AUTH_METADATA_KEY:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if text[: len(BEARER)].lower() == BEARER:
            presented = text[len(BEARER) :].strip().encode("utf-8")
            if hmac.compare_digest(presented, expected):
                return True
    return False


def is_open_method(method: str) -> bool:
    """Health checks and reflection answer without a token."""
    return method.startswith(OPEN_METHOD_PREFIXES)


# --- client side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSecurity:
    """How a client dials a grm server; the default is plaintext without a token."""

    tls: bool = False  # TLS on (with `ca_pem`, else the system's roots)
    ca_pem: bytes | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)  # client certificate (mTLS)
    key_pem: bytes | None = field(default=None, repr=False)
    server_name: str | None = None  # expected name in the server certificate
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None  # the token's file: re-read when it changes

    @classmethod
    def load(
        cls,
        *,
        tls: bool = False,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        server_name: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        names: tuple[str, str, str] = ("--tls-ca", "--tls-cert", "--tls-key"),
    ) -> ClientSecurity:
        """From PEM files; any TLS setting (or `tls`) turns TLS on. `names`: the options.
        `token_file`: where `token` was read, so calls follow it when it changes."""
        ca_opt, cert_opt, key_opt = names
        if bool(cert) != bool(key):
            missing = cert_opt if not cert else key_opt
            raise SecurityConfigError(
                f"a client certificate needs {cert_opt} and {key_opt}: {missing} is unset"
            )
        on = bool(tls or ca or cert or server_name)
        return cls(
            tls=on,
            ca_pem=read_pem(ca, ca_opt) if ca else None,
            cert_pem=read_pem(cert, cert_opt) if cert else None,
            key_pem=read_pem(key, key_opt) if key else None,
            server_name=server_name or None,
            token=_check_token(token, "token") if token else None,
            token_file=token_file if token else None,
        )

    def with_token(self, token: str | None) -> ClientSecurity:
        return self if token is None else replace(self, token=token, token_file=None)

    def token_source(self) -> TokenSource | None:
        """What the channels read the token from on every call (None: no token)."""
        if not self.token:
            return None
        if self.token_file:
            return TokenSource(self.token, path=self.token_file, option="token")
        return TokenSource(self.token)

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.tls and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


PLAINTEXT = ClientSecurity()


def bearer_header(token: Callable[[], str | None]) -> tuple[str, str]:
    """The metadata entry carrying the token as it is now (a call that outlives a rotation
    keeps the one it opened with, so long-lived calls are reopened now and then)."""
    return (AUTH_METADATA_KEY, f"Bearer {token()}")


class _AioBearer(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every unary call (`_AioBearerStream`: server-streaming)."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    @property
    def _header(self) -> tuple[str, str]:
        return bearer_header(self._token)

    def __repr__(self) -> str:
        return "_AioBearer(<token>)"

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = [*(client_call_details.metadata or ()), self._header]
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class _AioBearerStream(grpc.aio.UnaryStreamClientInterceptor):
    """The bearer token on every server-streaming call (a channel files an interceptor under
    one call type only, so the two kinds are two objects)."""

    def __init__(self, token: TokenSource) -> None:
        self._unary = _AioBearer(token)

    def __repr__(self) -> str:
        return "_AioBearerStream(<token>)"

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await self._unary.intercept_unary_unary(continuation, client_call_details, request)


@dataclass(frozen=True)
class _SyncDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, Any]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class _SyncBearer(grpc.UnaryUnaryClientInterceptor):
    """The blocking channel's counterpart of _AioBearer."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    @property
    def _header(self) -> tuple[str, str]:
        return bearer_header(self._token)

    def __repr__(self) -> str:
        return "_SyncBearer(<token>)"

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        details = _SyncDetails(
            client_call_details.method,
            client_call_details.timeout,
            [*(client_call_details.metadata or ()), self._header],
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def aio_channel(
    target: str,
    security: ClientSecurity | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[Any] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `target`: TLS when configured, the token on every call.

    `credentials` (caller-built) take the place of the TLS settings in `security`.
    """
    security = security or PLAINTEXT
    chain = list(interceptors)
    token = security.token_source()
    if token is not None:
        chain += [_AioBearer(token), _AioBearerStream(token)]
    creds = credentials or security.credentials()
    opts = [*options, *security.channel_options()]
    if creds is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=chain or None)
    return grpc.aio.secure_channel(target, creds, options=opts, interceptors=chain or None)


def sync_channel(
    target: str,
    security: ClientSecurity | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.Channel:
    """The blocking counterpart of `aio_channel`."""
    security = security or PLAINTEXT
    creds = credentials or security.credentials()
    opts = [*options, *security.channel_options()]
    channel = (
        grpc.insecure_channel(target, options=opts)
        if creds is None
        else grpc.secure_channel(target, creds, options=opts)
    )
    token = security.token_source()
    if token is not None:
        channel = grpc.intercept_channel(channel, _SyncBearer(token))
    return channel


def client_security_from_env(environ: Mapping[str, str] | None = None) -> ClientSecurity:
    """Upstream dial settings from GRM_UPSTREAM_TLS_* and the token variables (`grm up`)."""
    env = os.environ if environ is None else environ
    token_file = env.get("GRM_UPSTREAM_AUTH_TOKEN_FILE") or env.get("GRM_AUTH_TOKEN_FILE")
    token = resolve_token(token_file, env, file_option="GRM_UPSTREAM_AUTH_TOKEN_FILE")
    return ClientSecurity.load(
        ca=env.get("GRM_UPSTREAM_TLS_CA") or None,
        cert=env.get("GRM_UPSTREAM_TLS_CERT") or None,
        key=env.get("GRM_UPSTREAM_TLS_KEY") or None,
        server_name=env.get("GRM_UPSTREAM_TLS_SERVER_NAME") or None,
        token=token,
        token_file=token_file or None,
        names=("GRM_UPSTREAM_TLS_CA", "GRM_UPSTREAM_TLS_CERT", "GRM_UPSTREAM_TLS_KEY"),
    )
