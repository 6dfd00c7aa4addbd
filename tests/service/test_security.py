"""Transport security over real loopback servers: TLS, mutual TLS and the bearer token.

A throwaway PKI is made with the openssl CLI for this module: a CA, a server certificate
(names grm.test, localhost and 127.0.0.1), a client certificate, and a second CA with a
client certificate of its own that the servers must refuse.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import secrets
import shutil
import socket
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grm.cli import main as cli
from grm.client import NO_RETRY, AsyncGrmClient, GrmClient
from grm.core.errors import GrmError
from grm.core.types import ScoreStatus
from grm.rpc.security import (
    ClientSecurity,
    SecurityConfigError,
    ServerTls,
    TokenSource,
    aio_channel,
    bearer_ok,
    client_security_from_env,
)
from grm.rpc.server import ServerSettings, wait_serving
from grm.services.aggregator import main as aggregator_main
from grm.services.aggregator.http_rm import HttpRmSettings
from grm.services.sampler import main as sampler_main
from grm.v1 import common_pb2, critique_pb2, critique_pb2_grpc, reward_pb2, reward_pb2_grpc
from tests.support.certs import make_ca, make_leaf
from tests.support.servers import LOOPBACK, TrackingBackend, running_suite, start_sampler
from tests.support.volumes import SecretVolume

TOKEN = "tok-" + secrets.token_hex(16)
HEALTHCHECK = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
RESPONSES = ["bad one", "good one"]


# --- a throwaway PKI --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def server_tls(self, *, mutual: bool = True) -> ServerTls:
        tls = ServerTls.load(
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem") if mutual else None,
        )
        assert tls is not None
        return tls

    def server(self, *, mutual: bool = True, token: str | None = TOKEN) -> ServerSettings:
        return replace(LOOPBACK, tls=self.server_tls(mutual=mutual), auth_token=token)

    def client(
        self,
        token: str | None = TOKEN,
        *,
        cert: str | None = "client",
        server_name: str | None = None,
        ca: str = "ca.pem",
    ) -> ClientSecurity:
        return ClientSecurity.load(
            ca=self.path(ca),
            cert=self.path(f"{cert}.pem") if cert else None,
            key=self.path(f"{cert}.key") if cert else None,
            server_name=server_name,
            token=token,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "DNS:grm.test,DNS:localhost,IP:127.0.0.1")
    make_leaf(d, "client", "ca", "DNS:aggregator.grm.test")
    make_leaf(d, "stranger", "other-ca", "DNS:stranger.test")
    return Pki(d)


async def health(address: str, security: ClientSecurity | None, service: str = "") -> str:
    """The health status name, or the gRPC error code's name."""
    async with aio_channel(address, security) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def score_code(address: str, security: ClientSecurity | None) -> str:
    """The status of one Score call (OK or the error code's name)."""
    request = reward_pb2.ScoreRequest(query="q", responses=RESPONSES, k=2)
    async with aio_channel(address, security) as channel:
        try:
            await reward_pb2_grpc.RewardServiceStub(channel).Score(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return "OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- TLS and mutual TLS -----------------------------------------------------------------------


async def test_tls_works_and_plaintext_or_an_unknown_ca_is_refused(pki: Pki) -> None:
    sampler = await start_sampler(server=replace(LOOPBACK, tls=pki.server_tls(mutual=False)))
    try:
        await wait_serving(sampler.address, within_s=5, security=pki.client(cert=None))
        assert await health(sampler.address, pki.client(cert=None)) == "SERVING"
        assert await health(sampler.address, None) == "UNAVAILABLE"  # plaintext client
        assert await health(sampler.address, pki.client(ca="other-ca.pem")) == "UNAVAILABLE"
        named = pki.client(cert=None, server_name="grm.test")
        assert await health(sampler.address, named) == "SERVING"
        misnamed = pki.client(cert=None, server_name="elsewhere.test")
        assert await health(sampler.address, misnamed) == "UNAVAILABLE"
    finally:
        await sampler.stop()


async def test_mutual_tls_refuses_clients_without_a_cert_of_its_ca(pki: Pki) -> None:
    sampler = await start_sampler(server=replace(LOOPBACK, tls=pki.server_tls(mutual=True)))
    try:
        assert await health(sampler.address, pki.client()) == "SERVING"
        assert await health(sampler.address, pki.client(cert=None)) == "UNAVAILABLE"
        assert await health(sampler.address, pki.client(cert="stranger")) == "UNAVAILABLE"
        assert await health(sampler.address, None) == "UNAVAILABLE"
    finally:
        await sampler.stop()


async def test_the_health_port_serves_plaintext_health_only(pki: Pki) -> None:
    """Kubelet gRPC probes cannot speak TLS: a separate port answers them, and only them."""
    port = free_port()
    settings = replace(pki.server(), health_port=port)
    sampler = await start_sampler(server=settings)
    try:
        probe = f"127.0.0.1:{port}"
        assert await health(probe, None) == "SERVING"
        assert await health(probe, None, "grm.v1.CritiqueService") == "SERVING"
        assert await score_code(probe, None) == "UNIMPLEMENTED"
    finally:
        await sampler.stop()
    assert await health(probe, None) == "UNAVAILABLE"  # stopped with the server


# --- the whole chain: aggregator → samplers and principles over mTLS + token ------------------


async def test_the_chain_scores_over_mutual_tls_with_a_token(pki: Pki) -> None:
    async with running_suite(
        backend_server=pki.server(),
        server=pki.server(),
        upstream=pki.client(),
    ) as suite:
        async with AsyncGrmClient(suite.address, timeout=10, security=pki.client()) as client:
            result = await client.score("q", RESPONSES, k=4, principle_mode="separate")
        assert result.rewards == (2.0, 9.0)
        assert result.status is ScoreStatus.COMPLETE and result.k_used == 4
        assert sum(s.backend.finished for s in suite.samplers) == 4
        assert suite.principles.backend.finished > 0  # the principle generator too
        # A latency budget: the samples travel in SampleStream calls, which carry the token.
        async with AsyncGrmClient(suite.address, timeout=10, security=pki.client()) as client:
            timed = await client.score("q", RESPONSES, k=4, seed=5, latency_budget_ms=5000)
        assert timed.rewards == (2.0, 9.0) and timed.k_used == 4

        def blocking() -> tuple[float, ...]:
            with GrmClient(suite.address, timeout=10, security=pki.client()) as sync_client:
                return sync_client.score("q", RESPONSES, k=2).rewards

        assert await asyncio.to_thread(blocking) == (2.0, 9.0)


async def test_a_missing_or_wrong_token_is_unauthenticated(pki: Pki) -> None:
    async with running_suite(
        backend_server=pki.server(), server=pki.server(), upstream=pki.client()
    ) as suite:
        assert await score_code(suite.address, pki.client()) == "OK"
        assert await score_code(suite.address, pki.client(token=None)) == "UNAUTHENTICATED"
        assert await score_code(suite.address, pki.client(token=TOKEN + "x")) == "UNAUTHENTICATED"
        assert await score_code(suite.address, pki.client(token=TOKEN[:-1])) == "UNAUTHENTICATED"
        # Health checks (kubelet probes, load balancers) need no token.
        assert await health(suite.address, pki.client(token=None)) == "SERVING"
        sdk = AsyncGrmClient(suite.address, retry=NO_RETRY, security=pki.client(token=None))
        async with sdk as client:
            with pytest.raises(GrmError) as caught:
                await client.score("q", RESPONSES, k=1)
        assert caught.value.code == "UNAUTHENTICATED"


async def test_an_aggregator_without_the_samplers_token_fails_never_scores_zero(pki: Pki) -> None:
    async with running_suite(
        backend_server=pki.server(),
        server=pki.server(),
        upstream=pki.client(token="not-the-token"),
        max_attempts=1,
    ) as suite:
        async with AsyncGrmClient(
            suite.address, timeout=10, retry=NO_RETRY, security=pki.client()
        ) as client:
            with pytest.raises(GrmError) as caught:
                await client.score("q", RESPONSES, k=1)
        assert all(s.backend.finished == 0 for s in suite.samplers)
        # The caller's token was right: the aggregator's misconfiguration is UNAVAILABLE,
        # and the message says why.
        assert caught.value.code == "UNAVAILABLE"
        assert "UNAUTHENTICATED" in str(caught.value)
        # The same through SampleStream (a latency budget): refused as UNAUTHENTICATED.
        async with AsyncGrmClient(
            suite.address, timeout=10, retry=NO_RETRY, security=pki.client()
        ) as client:
            with pytest.raises(GrmError) as caught:
                await client.score("q", RESPONSES, k=2, latency_budget_ms=5000)
        assert all(s.backend.finished == 0 for s in suite.samplers)
        assert caught.value.code == "UNAVAILABLE"
        assert "UNAUTHENTICATED" in str(caught.value)


async def test_a_plaintext_client_against_the_tls_front_door_is_unavailable(pki: Pki) -> None:
    async with running_suite(
        backend_server=pki.server(), server=pki.server(), upstream=pki.client()
    ) as suite:
        async with AsyncGrmClient(suite.address, timeout=5, retry=NO_RETRY, token=TOKEN) as client:
            with pytest.raises(GrmError) as caught:
                await client.score("q", RESPONSES, k=1)
        assert caught.value.code == "UNAVAILABLE"


async def test_get_reward_loopback_dials_its_own_tls_server(pki: Pki) -> None:
    async with running_suite(
        backend_server=pki.server(),
        server=pki.server(),
        upstream=pki.client(),
        http=HttpRmSettings(port=0, group=False, k=1),
    ) as suite:
        assert suite.aggregator.http is not None
        url = f"http://127.0.0.1:{suite.aggregator.http.port}/get_reward"
        body = {"query": ["Q good", "Q bad"], "prompts": ["Q", "Q"]}
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as reply:
            status, data = reply.status, await reply.json()
    assert status == 200, data
    assert data["rewards"] == [9.0, 2.0]


async def test_grm_score_target_over_mutual_tls_with_a_token_file(pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")  # Secrets often end in a newline
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "a", "query": "q", "responses": RESPONSES}) + "\n")
    out = tmp_path / "out.jsonl"
    async with running_suite(
        backend_server=pki.server(), server=pki.server(), upstream=pki.client()
    ) as suite:
        argv = [
            *("score", str(items), "--target", suite.address, "--quiet", "-o", str(out)),
            *("--tls-ca", pki.path("ca.pem"), "--tls-server-name", "grm.test"),
            *("--tls-client-cert", pki.path("client.pem")),
            *("--tls-client-key", pki.path("client.key")),
            *("--auth-token-file", str(token_file)),
        ]
        assert await asyncio.to_thread(cli.main, argv) == 0
    [line] = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["rewards"] == [2.0, 9.0]


async def test_the_token_never_reaches_the_logs(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_suite(
        backend_server=pki.server(), server=pki.server(), upstream=pki.client()
    ) as suite:
        assert await score_code(suite.address, pki.client()) == "OK"
        wrong = TOKEN[:-4] + "zzzz"
        assert await score_code(suite.address, pki.client(token=wrong)) == "UNAUTHENTICATED"
        settings_text = repr(suite.aggregator.server.settings)
    assert "UNAUTHENTICATED" in caplog.text  # the rejection is logged...
    assert TOKEN not in caplog.text and wrong not in caplog.text  # ...without any token
    assert TOKEN[4:12] not in caplog.text
    assert TOKEN not in settings_text
    assert TOKEN not in repr(pki.client()) and TOKEN not in repr(pki.server())


# --- settings: clear startup errors -----------------------------------------------------------


def test_a_missing_cert_file_stops_startup_naming_the_option(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SystemExit) as caught:
        cli.main(["serve", "sampler", "--tls-cert", missing, "--tls-key", pki.path("server.key")])
    message = str(caught.value.code)
    assert "--tls-cert" in message and "cannot read" in message and missing in message


@pytest.mark.parametrize(
    ("argv", "env", "complaint"),
    [
        (["--tls-key", "K"], {}, "--tls-cert is unset"),
        (["--tls-client-ca", "CA"], {}, "--tls-client-ca needs --tls-cert"),
        ([], {"GRM_TLS_CERT": "C"}, "--tls-key is unset"),
        (["--auth-token-file", "MISSING"], {}, "--auth-token-file: cannot read"),
        ([], {"GRM_AUTH_TOKEN": "two words"}, "without whitespace"),
    ],
)
def test_incomplete_security_settings_are_startup_errors(
    pki: Pki, argv: list[str], env: dict[str, str], complaint: str
) -> None:
    fill = {"K": pki.path("server.key"), "C": pki.path("server.pem"), "CA": pki.path("ca.pem")}
    argv = [fill.get(a, a) for a in argv]
    env = {k: fill.get(v, v) for k, v in env.items()}
    parser = cli.build_parser()
    args = parser.parse_args(["serve", "sampler", *argv])
    with pytest.raises(SystemExit) as caught:
        sampler_main.build_settings(args, env)
    assert complaint in str(caught.value.code)


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "cert.pem"
    junk.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(SecurityConfigError, match=r"--tls-cert: .* is not a PEM file"):
        ServerTls.load(str(junk), str(junk))


def test_aggregator_settings_wire_tls_token_and_upstream(pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    args = cli.build_parser().parse_args(["serve", "aggregator", "--samplers", "s:1"])
    env = {
        "GRM_TLS_CERT": pki.path("server.pem"),
        "GRM_TLS_KEY": pki.path("server.key"),
        "GRM_TLS_CLIENT_CA": pki.path("ca.pem"),
        "GRM_AUTH_TOKEN_FILE": str(token_file),
        "GRM_UPSTREAM_TLS_CA": pki.path("ca.pem"),
        "GRM_UPSTREAM_TLS_CERT": pki.path("client.pem"),
        "GRM_UPSTREAM_TLS_KEY": pki.path("client.key"),
        "GRM_UPSTREAM_TLS_SERVER_NAME": "grm.test",
    }
    settings = aggregator_main.build_settings(args, env)
    assert settings.server.tls is not None and settings.server.tls.mutual
    assert settings.server.auth_token == TOKEN
    assert settings.upstream.tls and settings.upstream.server_name == "grm.test"
    assert settings.upstream.token == TOKEN  # the upstream token defaults to its own
    assert TOKEN not in repr(settings)
    # The same variables tell `grm up` how to dial its children.
    assert client_security_from_env({**env, "GRM_AUTH_TOKEN_FILE": str(token_file)}) == (
        settings.upstream
    )
    # /get_reward's loopback client must be able to verify this server.
    no_ca = {k: v for k, v in env.items() if not k.startswith("GRM_UPSTREAM_TLS")}
    http_args = cli.build_parser().parse_args(
        ["serve", "aggregator", "--samplers", "s:1", "--http-port", "8000"]
    )
    with pytest.raises(SystemExit, match="--upstream-tls-ca"):
        aggregator_main.build_settings(http_args, no_ca)


def test_bearer_header_parsing() -> None:
    assert bearer_ok([("authorization", f"Bearer {TOKEN}")], TOKEN)
    assert bearer_ok([("x-other", "1"), ("authorization", f"bearer {TOKEN}")], TOKEN)
    assert not bearer_ok([("authorization", TOKEN)], TOKEN)  # no scheme
    assert not bearer_ok([("authorization", f"Basic {TOKEN}")], TOKEN)
    assert not bearer_ok([("authorization", f"Bearer {TOKEN}x")], TOKEN)
    assert not bearer_ok(None, TOKEN)


async def test_the_image_healthcheck_speaks_mutual_tls(pki: Pki) -> None:
    """docker/healthcheck.py (the `helm test` pod's check) with the chart's TLS flags."""
    spec = importlib.util.spec_from_file_location("grm_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sampler = await start_sampler(server=pki.server())
    try:
        tls = [*("--tls-ca", pki.path("ca.pem"), "--tls-server-name", "grm.test")]
        mutual = [*("--tls-cert", pki.path("client.pem"), "--tls-key", pki.path("client.key"))]
        argv = ["--address", sampler.address, "--timeout", "3"]
        assert await asyncio.to_thread(module.main, [*argv, *tls, *mutual]) == 0
        assert await asyncio.to_thread(module.main, [*argv, *tls]) == 1  # no client cert
        assert await asyncio.to_thread(module.main, argv) == 1  # plaintext
    finally:
        await sampler.stop()


# --- rotation without a restart ---------------------------------------------------------------


def _read(pki: Pki, name: str) -> bytes:
    return (pki.dir / name).read_bytes()


async def _sample_code(address: str, security: ClientSecurity) -> str:
    """One CritiqueService.Sample call's status (OK or the error code's name)."""
    request = critique_pb2.CritiqueRequest(
        query="q", responses=RESPONSES, specs=[common_pb2.SampleSpec(index=0, seed=1, order=[0, 1])]
    )
    async with aio_channel(address, security) as channel:
        try:
            await critique_pb2_grpc.CritiqueServiceStub(channel).Sample(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return "OK"


async def test_rotated_certificate_key_ca_and_token_take_effect_without_a_restart(
    pki: Pki, tmp_path: Path
) -> None:
    if not (pki.dir / "server2.pem").exists():
        make_leaf(pki.dir, "server2", "other-ca", "DNS:grm.test,DNS:localhost,IP:127.0.0.1")
    volume = SecretVolume(
        tmp_path / "tls",
        {
            "tls.crt": _read(pki, "server.pem"),
            "tls.key": _read(pki, "server.key"),
            "ca.crt": _read(pki, "ca.pem"),
            "token": b"first-token\n",
        },
    )
    tls = ServerTls.load(volume.path("tls.crt"), volume.path("tls.key"), volume.path("ca.crt"))
    server = replace(
        LOOPBACK, tls=tls, auth_token="first-token", auth_token_file=volume.path("token")
    )
    sampler = await start_sampler(TrackingBackend(delay=1.0), server=server)

    def client(ca: str, cert: str, token: str) -> ClientSecurity:
        return pki.client(token, cert=cert, ca=ca)

    old = client("ca.pem", "client", "first-token")
    new = client("other-ca.pem", "stranger", "second-token")
    try:
        assert await _sample_code(sampler.address, old) == "OK"
        # A call in flight while the Secret changes (it takes 1 s) finishes on its connection.
        in_flight = asyncio.ensure_future(_sample_code(sampler.address, old))
        await asyncio.sleep(0.3)
        assert sampler.backend.running == 1
        volume.update(
            {
                "tls.crt": _read(pki, "server2.pem"),
                "tls.key": _read(pki, "server2.key"),
                "ca.crt": _read(pki, "other-ca.pem"),
                "token": b"second-token\n",
            }
        )
        assert await in_flight == "OK"
        # New connections get the new certificate (signed by the other CA), the new client
        # CA and the new token; the old material no longer opens a call.
        assert await _sample_code(sampler.address, new) == "OK"
        assert await _sample_code(sampler.address, old) == "UNAVAILABLE"  # old CA: no handshake
        with_old_token = client("other-ca.pem", "stranger", "first-token")
        assert await _sample_code(sampler.address, with_old_token) == "UNAUTHENTICATED"
    finally:
        await sampler.stop(0)


async def test_a_half_written_rotation_keeps_the_last_good_material(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    volume = SecretVolume(
        tmp_path / "tls", {"tls.crt": _read(pki, "server.pem"), "tls.key": _read(pki, "server.key")}
    )
    tls = ServerTls.load(volume.path("tls.crt"), volume.path("tls.key"))
    sampler = await start_sampler(server=replace(LOOPBACK, tls=tls))
    try:
        # A certificate whose key is not there yet: handshakes go on with the last good pair.
        volume.update({"tls.crt": _read(pki, "client.pem"), "tls.key": _read(pki, "server.key")})
        with caplog.at_level(logging.WARNING, logger="grm.rpc.security"):
            assert await _sample_code(sampler.address, pki.client(None, cert=None)) == "OK"
        assert "cannot be used" in caplog.text
    finally:
        await sampler.stop(0)


async def test_client_channels_follow_a_rotated_token_file(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "auth", {"token": b"first-token"})
    server = replace(LOOPBACK, auth_token="first-token", auth_token_file=volume.path("token"))
    sampler = await start_sampler(server=server)
    following = ClientSecurity.load(token="first-token", token_file=volume.path("token"))
    fixed = ClientSecurity.load(token="first-token")
    try:
        async with aio_channel(sampler.address, following) as channel:
            stub = critique_pb2_grpc.CritiqueServiceStub(channel)
            await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)
            volume.update({"token": b"second-token"})
            await stub.GetLoad(critique_pb2.LoadRequest(), timeout=5)  # same channel, new token
        assert await _sample_code(sampler.address, fixed) == "UNAUTHENTICATED"
    finally:
        await sampler.stop(0)


# --- /get_reward secured like gRPC -------------------------------------------------------------


async def test_get_reward_over_https_needs_the_token(pki: Pki) -> None:
    http = HttpRmSettings(
        port=0, group=False, k=1, tls=pki.server_tls(mutual=False), token=TokenSource(TOKEN)
    )
    async with running_suite(
        backend_server=pki.server(),
        server=pki.server(mutual=False),
        upstream=pki.client(),
        http=http,
    ) as suite:
        assert suite.aggregator.http is not None
        port = suite.aggregator.http.port
        body = {"query": ["Q good", "Q bad"], "prompts": ["Q", "Q"]}
        ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
        url = f"https://127.0.0.1:{port}/get_reward"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=body, ssl=ctx) as reply:
                assert reply.status == 401
                assert "bearer" in (await reply.json())["error"]
            wrong = {"Authorization": f"Bearer {TOKEN}x"}
            async with session.post(url, json=body, ssl=ctx, headers=wrong) as reply:
                assert reply.status == 401
            right = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(url, json=body, ssl=ctx, headers=right) as reply:
                assert reply.status == 200
                assert (await reply.json())["rewards"] == [9.0, 2.0]
            async with session.get(f"https://127.0.0.1:{port}/health", ssl=ctx) as reply:
                assert reply.status == 200  # probes need no token
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                async with session.post(f"http://127.0.0.1:{port}/get_reward", json=body):
                    pass


def test_the_http_endpoint_takes_the_servers_tls_and_token(pki: Pki, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN, encoding="utf-8")
    args = cli.build_parser().parse_args(
        ["serve", "aggregator", "--samplers", "s:1", "--http-port", "8000"]
    )
    env = {
        "GRM_TLS_CERT": pki.path("server.pem"),
        "GRM_TLS_KEY": pki.path("server.key"),
        "GRM_AUTH_TOKEN_FILE": str(token_file),
        "GRM_UPSTREAM_TLS_CA": pki.path("ca.pem"),
    }
    settings = aggregator_main.build_settings(args, env)
    assert settings.http is not None and settings.http.tls is settings.server.tls
    assert settings.http.token is not None and settings.http.token() == TOKEN
    token_file.write_text("rotated-token", encoding="utf-8")
    assert settings.http.token() == "rotated-token"
