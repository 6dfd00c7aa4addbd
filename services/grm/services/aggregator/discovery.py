"""Sampler pool discovery: the ready members of the sampler's headless Service.

The aggregator balances over sampler pods itself (one channel per pod), so it must know the
pod set as it changes: `EndpointSliceWatcher` lists and then watches the EndpointSlices
(discovery.k8s.io/v1) labelled `kubernetes.io/service-name=<service>` and hands every new set
of ready "ip:port" addresses to a callback on the event loop (the pool's `update_addresses`).

- list → watch from the list's resourceVersion; a stream that ends is re-watched from the
  last version seen; 410 Gone / expired → relist.
- An API error or a lost connection keeps the last known set (never an empty pool because the
  API is down), backs off (bounded, jittered) and relists.
- The label selector is sent, and slices are filtered here again: a server (or an emulator)
  that ignores selectors must not add another service's pods to the pool.

The official `kubernetes` client is synchronous, so the list/watch loop runs on a daemon
thread and pushes sets into the loop with `call_soon_threadsafe`; `close` shuts the watch
socket down so the thread ends promptly. The client is imported only when discovery is used.
Pure logic (slices → addresses, event → state, back-off) is kept apart and unit-tested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SERVICE_LABEL = "kubernetes.io/service-name"
PORT_NAME = "grpc"
# The namespace file every pod with a mounted service-account token has.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
HTTP_GONE = 410

Slice = Mapping[str, Any]


DISCOVERY_MODES = ("static", "kubernetes")


def parse_discovery(text: str) -> str:
    """`--sampler-discovery`: static | kubernetes."""
    value = text.strip().lower()
    if value not in DISCOVERY_MODES:
        raise ValueError(f"unknown sampler discovery {text!r}; choose static or kubernetes")
    return value


# --- pure logic ------------------------------------------------------------------------


def belongs_to(obj: Slice, service: str) -> bool:
    """Whether an EndpointSlice is one of `service`'s (its service-name label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(SERVICE_LABEL) == service


def slice_key(obj: Slice) -> str:
    """A slice's identity in the watcher's state: namespace/name."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _slice_port(obj: Slice, port_name: str) -> int | None:
    """The port named `port_name`, else the slice's only port (None: no usable port)."""
    ports = [p for p in obj.get("ports") or [] if isinstance(p, Mapping) and p.get("port")]
    for p in ports:
        if p.get("name") == port_name:
            return int(p["port"])
    if len(ports) == 1:
        return int(ports[0]["port"])
    return None


def _endpoint_ready(endpoint: Mapping[str, Any]) -> bool:
    """Ready or unknown (unset means ready, per the API), and not terminating."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def slice_addresses(obj: Slice, port_name: str = PORT_NAME) -> set[str]:
    """The "ip:port" of each ready endpoint of one slice (the first address of each: they
    are fungible, one pod); FQDN slices and slices without a usable port give nothing."""
    address_type = obj.get("addressType") or "IPv4"
    if address_type not in ("IPv4", "IPv6"):
        return set()
    port = _slice_port(obj, port_name)
    if port is None:
        return set()
    out: set[str] = set()
    for endpoint in obj.get("endpoints") or []:
        if not isinstance(endpoint, Mapping) or not _endpoint_ready(endpoint):
            continue
        addresses = endpoint.get("addresses") or []
        if not addresses:
            continue
        ip = str(addresses[0])
        out.add(f"[{ip}]:{port}" if address_type == "IPv6" else f"{ip}:{port}")
    return out


def ready_addresses(
    slices: Iterable[Slice], service: str, port_name: str = PORT_NAME
) -> frozenset[str]:
    """The sampler addresses of `service` over all its slices (others' slices ignored)."""
    out: set[str] = set()
    for obj in slices:
        if belongs_to(obj, service):
            out |= slice_addresses(obj, port_name)
    return frozenset(out)


def apply_event(state: dict[str, Slice], kind: str, obj: Slice, service: str) -> bool:
    """Apply one watch event to {key: slice}; True when the state changed.

    A slice relabelled away from the service counts as deleted; unknown types are ignored.
    """
    key = slice_key(obj)
    if kind in ("ADDED", "MODIFIED") and belongs_to(obj, service):
        if state.get(key) == obj:
            return False
        state[key] = obj
        return True
    if kind in ("ADDED", "MODIFIED", "DELETED"):
        return state.pop(key, None) is not None
    return False


def backoff_delay(
    failures: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after `failures` failures in a row: exponential, capped, jittered
    (between half and all of the step, so many aggregators do not retry in step)."""
    if failures <= 0:
        return 0.0
    step = min(cap_s, base_s * 2 ** (failures - 1))
    return step * (0.5 + 0.5 * rng())


def pod_namespace(path: Path = NAMESPACE_FILE) -> str:
    """This pod's namespace from its service-account mount, else "default"."""
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def kubernetes_api_client() -> Any:
    """An ApiClient from the in-cluster config inside a pod, else from the kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


# --- the watcher -----------------------------------------------------------------------


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class _Stopped(Exception):
    """close() was called."""


class EndpointSliceWatcher:
    """Keeps `on_change` told of the ready addresses of one Service's EndpointSlices."""

    def __init__(
        self,
        service: str,
        namespace: str,
        on_change: Callable[[frozenset[str]], None],
        *,
        api_client: Any | None = None,
        port_name: str = PORT_NAME,
        watch_timeout_s: int = 240,
        request_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        if not service:
            raise ValueError("sampler discovery needs the sampler Service's name")
        self.service = service
        self.namespace = namespace
        self.on_change = on_change
        self.port_name = port_name
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._api_client = api_client
        self._api: Any = None
        self._slices: dict[str, Slice] = {}
        self._published: frozenset[str] | None = None
        self.addresses: frozenset[str] | None = None  # last set delivered (None: none yet)
        self.failures = 0  # failures in a row (for logs and tests)
        self.lists = 0  # successful lists (for tests: a relist happened)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the list/watch thread (the first set arrives through `on_change`)."""
        if self._thread is not None:
            return
        from kubernetes import client

        if self._api_client is None:
            self._api_client = await asyncio.to_thread(kubernetes_api_client)
        self._api = client.DiscoveryV1Api(self._api_client)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"grm-discovery-{self.service}", daemon=True
        )
        self._thread.start()
        log.info(
            "sampler discovery: watching EndpointSlices of service %s in namespace %s",
            self.service,
            self.namespace,
        )

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread: interrupts a blocked watch read, waits a bounded time."""
        self._stop.set()
        self._interrupt()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
            if thread.is_alive():
                log.warning("sampler discovery thread did not stop within %.1fs", timeout_s)

    # -- thread side --

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                while True:
                    version = self._watch(version)
            except _Stopped:
                break
            except _Expired as exc:
                # Relist at once the first time; a 410 right after a relist backs off.
                self.failures += 1
                log.info("sampler discovery: watch expired (%s); relisting", exc)
                self._stop.wait(
                    backoff_delay(
                        self.failures - 1, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s
                    )
                )
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.failures += 1
                delay = backoff_delay(
                    self.failures, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s
                )
                log.warning(
                    "sampler discovery: %s; keeping %d known samplers, retrying in %.1fs",
                    _describe(exc),
                    len(self.addresses or ()),
                    delay,
                )
                self._stop.wait(delay)
        log.info("sampler discovery stopped")

    def _list(self) -> str | None:
        response = self._call(watch=False)
        try:
            body = json.loads(response.data or b"{}")
        finally:
            response.release_conn()
        items = body.get("items") or []
        self._slices = {
            slice_key(obj): obj
            for obj in items
            if isinstance(obj, Mapping) and belongs_to(obj, self.service)
        }
        self.lists += 1
        self._publish()
        version = (body.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None

    def _watch(self, version: str | None) -> str | None:
        """One watch request; returns the last resourceVersion when the stream ends."""
        import urllib3

        response = self._call(watch=True, resource_version=version)
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    raise _Stopped
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    code = obj.get("code")
                    message = f"{code} {obj.get('reason')}: {obj.get('message')}"
                    if code == HTTP_GONE or obj.get("reason") == "Expired":
                        raise _Expired(message)
                    raise RuntimeError(f"watch error event {message}")
                seen = (obj.get("metadata") or {}).get("resourceVersion")
                if seen:
                    version = str(seen)
                self.failures = 0  # the API is answering
                if kind == "BOOKMARK":
                    continue
                if apply_event(self._slices, str(kind), obj, self.service):
                    self._publish()
        except urllib3.exceptions.ReadTimeoutError:
            self.failures = 0  # an idle watch: watch again from the same version
        except (urllib3.exceptions.ProtocolError, OSError):
            if self._stop.is_set():
                raise _Stopped from None
            raise
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        if self._stop.is_set():
            raise _Stopped
        self.failures = 0  # the stream ended normally (server-side timeout)
        return version

    def _call(self, *, watch: bool, resource_version: str | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self._stop.is_set():
            raise _Stopped
        kwargs: dict[str, Any] = {"label_selector": f"{SERVICE_LABEL}={self.service}"}
        if watch:
            kwargs.update(
                watch=True,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_s,
                _request_timeout=(self.request_timeout_s, self.watch_timeout_s + 30),
            )
            if resource_version:
                kwargs["resource_version"] = resource_version
        else:
            kwargs["_request_timeout"] = self.request_timeout_s
        try:
            response = self._api.list_namespaced_endpoint_slice(
                self.namespace, _preload_content=False, **kwargs
            )
        except ApiException as exc:
            if exc.status == HTTP_GONE:
                raise _Expired(f"{exc.status} {exc.reason}") from None
            raise
        with self._lock:
            self._response = response if watch else None
        if self._stop.is_set():
            self._interrupt()
        return response

    def _interrupt(self) -> None:
        """Unblock a watch read from another thread (close())."""
        with self._lock:
            response = self._response
        if response is None:
            return
        try:
            response.shutdown()
        except Exception:
            try:
                response.close()
            except Exception:
                log.debug("could not interrupt the discovery watch", exc_info=True)

    def _publish(self) -> None:
        addresses = ready_addresses(self._slices.values(), self.service, self.port_name)
        if addresses == self._published:
            return
        self._published = addresses
        loop = self._loop
        if loop is None or self._stop.is_set():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, addresses)
        except RuntimeError:  # the loop is closed: nothing to tell
            pass

    # -- loop side --

    def _deliver(self, addresses: frozenset[str]) -> None:
        if self._stop.is_set():
            return
        old = self.addresses or frozenset()
        self.addresses = addresses
        log.info(
            "sampler pool from service %s: %d ready (added: %s; removed: %s)",
            self.service,
            len(addresses),
            ", ".join(sorted(addresses - old)) or "-",
            ", ".join(sorted(old - addresses)) or "-",
        )
        try:
            self.on_change(addresses)
        except Exception:
            log.exception("sampler pool update failed")


def _lines(response: Any) -> Iterator[str]:
    """The non-empty lines of a streamed watch response, as they arrive."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    """An error for the log without response bodies or headers (no tokens)."""
    status = getattr(exc, "status", None)
    if status is not None:
        return f"API error {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {str(exc)[:200]}"
