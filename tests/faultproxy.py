"""A fault-injecting HTTP endpoint in front of the sandbox AWS, as in the production-style run of issue 12.

The portal talks to it exactly as to AWS (boto3 over HTTP, botocore's own retries
included); it forwards every request to the sandbox and, for the calls a test
names, injects a fault:

- ``lose``: forward the call (AWS acts), then drop the connection without an
  answer. botocore sees a closed connection and, like after a lost response on
  the internet, retries the call — the case of a CreateKey executed twice.
- ``refuse``: answer ``500 KMSInternalException`` without forwarding (AWS does nothing).
- ``deny``: answer ``400 AccessDeniedException`` without forwarding, as for a
  least-privilege role that may not touch the key.
- ``throttle``: answer ``400 ThrottlingException`` without forwarding, as AWS does
  when the account and region's request quota is spent (botocore retries it).

:meth:`FaultProxy.when_answered` runs a callback after AWS acted and before the
answer goes back: e.g. take the portal's database away at exactly that moment.

Nothing in the portal is patched: the faults happen on the wire.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# The faults answered without forwarding: mode -> AWS error code (HTTP 500 for KMSInternalException, else 400).
_ANSWERS = {"refuse": "KMSInternalException", "deny": "AccessDeniedException", "throttle": "ThrottlingException"}
# Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1).
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """Inject ``mode`` into the next ``times`` calls of ``operation`` (e.g. ``"CreateKey"``)."""

    operation: str
    mode: str = "lose"
    times: int = 1


@dataclass
class FaultProxy:
    """A running proxy; ``url`` goes where the sandbox URL went. ``calls`` lists KMS/STS operations seen."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    callbacks: dict[str, Callable[[], None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def inject(self, operation: str, mode: str = "lose", times: int = 1) -> None:
        with self._lock:
            self.faults.append(Fault(operation, mode, times))

    def when_answered(self, operation: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` once, after AWS executed the next ``operation`` and before its answer is sent."""
        with self._lock:
            self.callbacks[operation] = callback

    def _callback_for(self, operation: str) -> Callable[[], None] | None:
        with self._lock:
            return self.callbacks.pop(operation, None)

    def _fault_for(self, operation: str) -> str | None:
        with self._lock:
            self.calls.append(operation)
            for fault in self.faults:
                if fault.operation == operation and fault.times > 0:
                    fault.times -= 1
                    self.injected.append(f"{operation}:{fault.mode}")
                    return fault.mode
        return None

    def start(self) -> str:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # the base class's name
                return  # quiet: the test output is for the test

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # KMS names the operation in X-Amz-Target ("TrentService.CreateKey"); STS in the form body.
                amz_target = self.headers.get("X-Amz-Target", "")
                operation = amz_target.rsplit(".", 1)[-1] if amz_target else _query_action(body)
                mode = proxy._fault_for(operation) if operation else None
                if mode in _ANSWERS:
                    error = _ANSWERS[mode]
                    payload = b'{"__type": "%s", "message": "injected by the fault proxy"}' % error.encode()
                    self.send_response(500 if mode == "refuse" else 400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                callback = proxy._callback_for(operation) if operation else None
                if callback is not None:
                    callback()
                if mode == "lose":
                    # AWS acted; the answer never arrives.
                    self.close_connection = True
                    return
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _query_action(body: bytes) -> str:
    from urllib.parse import parse_qs

    values = parse_qs(body.decode("utf-8", "replace")).get("Action", [])
    return values[0] if values else ""


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
