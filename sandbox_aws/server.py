"""The sandbox AWS server: moto's STS/KMS/IAM with the sandbox patches, plus ``/_sandbox/``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox_aws import control, kms, partitions, state, sts


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves which host.

    moto answers that question afresh for every request, listing its package directory
    and matching hundreds of URL patterns (a few milliseconds each time); the answer
    depends only on the host name and the installed moto, so it is worked out once per host.
    """

    def __init__(self, create_app: Any) -> None:
        super().__init__(create_app)
        self._backend_of_host: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backend_of_host:
            self._backend_of_host[host] = super().get_backend_for_host(host)
        return self._backend_of_host[host]


def install_patches() -> None:
    """Turn moto into the sandbox. Idempotent, so every server start may call it."""
    partitions.install()
    kms.install()
    sts.install()
    control.install_call_counter()


class SandboxServer:
    """An AWS-compatible endpoint on ``host:port`` served from a background thread.

    ``port=0`` lets the OS choose a free port; :meth:`start` returns the base URL to
    pass to boto3 as ``endpoint_url``. State lives in this process's moto backends, so
    two servers in one process share it.

    With ``state_path`` the state is also kept in that file (see :mod:`sandbox_aws.state`):
    :meth:`start` replaces whatever is in memory with the file's content (or with nothing,
    if there is no file yet, or if ``reset`` asks to forget it), and every change is
    written back before its response. One such server per process at a time.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, state_path: Path | None = None, reset: bool = False
    ) -> None:
        self.host = host
        self.port = port
        self.state_file = state.StateFile(state_path) if state_path is not None else None
        self.reset = reset
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("SandboxServer is not running; call start() first")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> str:
        """Bind, start serving in a daemon thread and return the base URL."""
        if self._server is not None:
            return self.url
        install_patches()
        if self.state_file is not None:
            self._open_state(self.state_file)
        app = control.with_control_api(_Dispatcher(create_backend_app))
        # Binding happens here, in the caller's thread: once start() returns, the port
        # accepts connections, so there is no readiness race.
        try:
            self._server = make_server(self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler)
        except BaseException:
            if self.state_file is not None:
                state.activate(None)
            raise
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-aws", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None
        if self.state_file is not None and state.active() is self.state_file:
            state.activate(None)

    def _open_state(self, state_file: state.StateFile) -> None:
        state.activate(state_file)
        try:
            if self.reset:
                state_file.remove()
                # Only the first start forgets: a restart of this server keeps what it saved since.
                self.reset = False
            if not state_file.load():
                control.reset_everything()
        except BaseException:
            state.activate(None)
            raise
