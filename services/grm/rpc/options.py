"""Typed settings from command-line flags and `GRM_*` environment variables.

A container sets environment variables, a person types flags. Settings are frozen dataclasses;
`dataclass_options` derives one option per field (flag from the field name unless renamed,
parser from the type hint, default from the field, help from `field(metadata={"help": ...})`)
and `build_dataclass` makes the instance from the resolved values, so a setting is declared
once, where it is used. `main` resolves flag > environment > default. Nothing is read at
import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grm.rpc.security import ClientSecurity, SecurityConfigError, ServerTls, resolve_token
from grm.rpc.server import ServerSettings


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Option:
    """One setting: `--flag`, `GRM_<ENV>` and its parser."""

    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "GRM_" + self.dest.upper()


D = TypeVar("D")
_PARSERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str}


def _parser_of(hint: Any) -> Callable[[str], Any]:
    """The parser of a field's type: int, float, str, bool, tuple[str, ...], or X | None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _parser_of(args[0])
    if hint is bool:
        return parse_bool
    if typing.get_origin(hint) is tuple:
        return parse_list
    if hint in _PARSERS:
        return _PARSERS[hint]
    raise TypeError(f"no option parser for {hint!r}")


def _fields(cls: type, only: Iterable[str] | None) -> list[dataclasses.Field[Any]]:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return [fields[name] for name in only] if only is not None else list(fields.values())


def _flag(name: str, flags: Mapping[str, str]) -> str:
    return flags.get(name, "--" + name.replace("_", "-"))


def dataclass_options(
    cls: type,
    *,
    only: Iterable[str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> list[Option]:
    """One Option per field of the settings dataclass `cls` (or the fields named in `only`).

    A field's metadata may carry `help` and `parse` (a parser for values the type hint cannot
    describe, e.g. a choice); `flags` renames fields whose flag differs from their name.
    """
    flags = flags or {}
    hints = typing.get_type_hints(cls)
    out = []
    for f in _fields(cls, only):
        default = f.default if f.default is not dataclasses.MISSING else None
        parse = f.metadata.get("parse") or _parser_of(hints[f.name])
        out.append(Option(_flag(f.name, flags), parse, default, f.metadata.get("help", "")))
    return out


def build_dataclass(
    cls: type[D],
    values: Mapping[str, Any],
    *,
    only: Iterable[str] | None = None,
    flags: Mapping[str, str] | None = None,
    **fixed: Any,
) -> D:
    """An instance of `cls` from values resolved for `dataclass_options(cls, ...)`."""
    flags = flags or {}
    kwargs = {
        f.name: values[_flag(f.name, flags).lstrip("-").replace("-", "_")]
        for f in _fields(cls, only)
    }
    return cls(**kwargs, **fixed)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for opt in options:
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            type=opt.type,
            default=None,
            help=f"{opt.help} (env {opt.env}; default {opt.default!r})",
        )


def resolve(
    args: argparse.Namespace, options: Sequence[Option], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Flag, else environment variable, else default; a malformed variable is an error."""
    out: dict[str, Any] = {}
    for opt in options:
        value = getattr(args, opt.dest, None)
        if value is None and opt.env in environ:
            try:
                value = opt.type(environ[opt.env])
            except ValueError as exc:
                raise SystemExit(f"grm: error: {opt.env}={environ[opt.env]!r}: {exc}") from exc
        out[opt.dest] = opt.default if value is None else value
    return out


def server_options(default_port: int) -> list[Option]:
    return [
        Option("--host", str, "0.0.0.0", "address to listen on"),
        Option("--port", int, default_port, "port to listen on (0 = any free port)"),
        Option("--grace-s", float, 10.0, "seconds in-flight RPCs get on SIGTERM"),
        Option("--max-message-mb", int, 64, "maximum gRPC message size"),
        Option("--max-connection-age-s", float, 300.0, "clients reconnect after this long"),
        Option("--port-file", str, None, "write the bound port to this file"),
        Option("--log-level", str, "INFO", "logging level"),
        *TELEMETRY_OPTIONS,
        *SECURITY_OPTIONS,
    ]


SECURITY_OPTIONS = [
    Option("--tls-cert", str, None, "serve TLS: certificate chain (PEM file)"),
    Option("--tls-key", str, None, "serve TLS: private key (PEM file)"),
    Option("--tls-client-ca", str, None, "mutual TLS: require client certs signed by this CA"),
    Option(
        "--auth-token-file",
        str,
        None,
        "require 'authorization: Bearer <token>' with this file's token (or GRM_AUTH_TOKEN)",
    ),
    Option("--health-port", int, 0, "plaintext health-only port for kubelet probes (0 = off)"),
]

UPSTREAM_OPTIONS = [
    Option("--upstream-tls-ca", str, None, "dial samplers/principles over TLS: CA bundle (PEM)"),
    Option("--upstream-tls-cert", str, None, "mutual TLS to samplers/principles: client cert"),
    Option("--upstream-tls-key", str, None, "mutual TLS to samplers/principles: client key"),
    Option("--upstream-tls-server-name", str, None, "name expected in samplers'/principles' certs"),
    Option(
        "--upstream-auth-token-file",
        str,
        None,
        "bearer token for samplers/principles (default: this server's own token)",
    ),
]


# How a client (`grm score --target`) dials a RewardService.
CLIENT_SECURITY_OPTIONS = [
    Option("--tls", parse_bool, False, "dial over TLS (implied by any --tls-* file)"),
    Option("--tls-ca", str, None, "CA bundle that signed the server's certificate (PEM)"),
    Option("--tls-client-cert", str, None, "mutual TLS: this client's certificate (PEM)"),
    Option("--tls-client-key", str, None, "mutual TLS: this client's private key (PEM)"),
    Option("--tls-server-name", str, None, "name expected in the server's certificate"),
    Option("--auth-token-file", str, None, "send this file's bearer token (or GRM_AUTH_TOKEN)"),
]


def client_security(values: Mapping[str, Any], environ: Mapping[str, str]) -> ClientSecurity:
    """ClientSecurity from resolved CLIENT_SECURITY_OPTIONS."""
    try:
        return ClientSecurity.load(
            tls=values["tls"],
            ca=values["tls_ca"],
            cert=values["tls_client_cert"],
            key=values["tls_client_key"],
            server_name=values["tls_server_name"],
            token=resolve_token(values["auth_token_file"], environ),
            token_file=values["auth_token_file"],
            names=("--tls-ca", "--tls-client-cert", "--tls-client-key"),
        )
    except SecurityConfigError as exc:
        raise config_error(exc) from None


def config_error(exc: SecurityConfigError) -> SystemExit:
    """The startup error for a security setting that cannot be used."""
    return SystemExit(f"grm: error: {exc}")


def upstream_security(
    values: Mapping[str, Any],
    environ: Mapping[str, str],
    own_token: str | None,
    own_token_file: str | None = None,
) -> ClientSecurity:
    """How a service dials the services behind it, from resolved UPSTREAM_OPTIONS (the token
    defaults to the service's own, followed in its file when it came from one)."""
    try:
        token_file = values["upstream_auth_token_file"]
        token = resolve_token(token_file, {}, file_option="--upstream-auth-token-file")
        if not token:
            token_file = None
            token = resolve_token(None, environ, env_name="GRM_UPSTREAM_AUTH_TOKEN") or own_token
            if token and token == own_token:
                token_file = own_token_file
        return ClientSecurity.load(
            ca=values["upstream_tls_ca"],
            cert=values["upstream_tls_cert"],
            key=values["upstream_tls_key"],
            server_name=values["upstream_tls_server_name"],
            token=token,
            token_file=token_file,
            names=("--upstream-tls-ca", "--upstream-tls-cert", "--upstream-tls-key"),
        )
    except SecurityConfigError as exc:
        raise config_error(exc) from None


TELEMETRY_OPTIONS = [
    Option("--metrics-port", int, 0, "Prometheus /metrics port on --host (0 = off)"),
    Option("--log-format", str, "json", "log lines: json (with trace/request ids) | text"),
    Option("--log-content", parse_bool, False, "also log prompts and generations"),
]


def server_settings(
    values: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServerSettings:
    """ServerSettings from resolved server_options; TLS files and the token are read here."""
    try:
        tls = ServerTls.load(
            values.get("tls_cert"), values.get("tls_key"), values.get("tls_client_ca")
        )
        token = resolve_token(values.get("auth_token_file"), environ or {})
    except SecurityConfigError as exc:
        raise config_error(exc) from None
    return ServerSettings(
        host=values["host"],
        port=values["port"],
        grace_s=values["grace_s"],
        max_message_mb=values["max_message_mb"],
        max_connection_age_s=values["max_connection_age_s"],
        port_file=values["port_file"],
        metrics_port=values.get("metrics_port", 0),
        log_format=values.get("log_format", "text"),
        log_content=values.get("log_content", False),
        tls=tls,
        auth_token=token,
        auth_token_file=values.get("auth_token_file") or None,
        health_port=values.get("health_port", 0),
    )


def environ() -> Mapping[str, str]:
    """The process environment (a function, so nothing is read at import time)."""
    return os.environ
