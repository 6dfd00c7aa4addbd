#!/opt/venv/bin/python
"""gRPC health check for the grm image: exit 0 when the server answers SERVING.

Used by the image's HEALTHCHECK (plain `docker run`) and by the chart's `helm test` pod.
Kubernetes itself probes the services with native gRPC probes and ignores HEALTHCHECK.

    grm-healthcheck                                  # this container: $GRM_PORT, else 50051-50053
    grm-healthcheck --address HOST:PORT --service grm.v1.RewardService --wait 60
    grm-healthcheck --address HOST:PORT --tls-ca ca.crt [--tls-cert c.crt --tls-key c.key]

With TLS on, the container's own check uses the plaintext health port ($GRM_HEALTH_PORT).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORTS = (50051, 50052, 50053)  # aggregator, principles, sampler


def _channel(address: str, args: argparse.Namespace) -> grpc.Channel:
    """Plaintext, or TLS when a CA is given (with a client certificate for mutual TLS)."""
    if not args.tls_ca:
        return grpc.insecure_channel(address)

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    creds = grpc.ssl_channel_credentials(read(args.tls_ca), read(args.tls_key), read(args.tls_cert))
    name = args.tls_server_name
    options = [("grpc.ssl_target_name_override", name)] if name else []
    return grpc.secure_channel(address, creds, options=options)


def check(address: str, service: str, timeout: float, args: argparse.Namespace) -> str:
    """The health status name, or the gRPC error code's name."""
    with _channel(address, args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grm-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", action="append", help="HOST:PORT (repeatable; any SERVING passes)"
    )
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    parser.add_argument("--wait", type=float, default=0.0, help="keep retrying this many seconds")
    parser.add_argument("--tls-ca", default=None, help="dial over TLS, verified with this CA")
    parser.add_argument("--tls-cert", default=None, help="mutual TLS: client certificate")
    parser.add_argument("--tls-key", default=None, help="mutual TLS: client key")
    parser.add_argument("--tls-server-name", default=None, help="name in the server's cert")
    args = parser.parse_args(argv)
    if args.address:
        addresses = args.address
    elif os.environ.get("GRM_HEALTH_PORT", "0") != "0":  # TLS on: the plaintext probe port
        addresses = [f"127.0.0.1:{os.environ['GRM_HEALTH_PORT']}"]
    elif os.environ.get("GRM_PORT"):
        addresses = [f"127.0.0.1:{os.environ['GRM_PORT']}"]
    else:
        addresses = [f"127.0.0.1:{port}" for port in DEFAULT_PORTS]
    deadline = time.monotonic() + args.wait
    while True:
        seen = {address: check(address, args.service, args.timeout, args) for address in addresses}
        if "SERVING" in seen.values():
            print(f"SERVING: {', '.join(a for a, s in seen.items() if s == 'SERVING')}")
            return 0
        if time.monotonic() >= deadline:
            print("not serving: " + ", ".join(f"{a} {s}" for a, s in seen.items()), file=sys.stderr)
            return 1
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
