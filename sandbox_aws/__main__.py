"""``python -m sandbox_aws --host 127.0.0.1 --port 4566``: run the sandbox AWS in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from sandbox_aws.server import SandboxServer


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    parser = argparse.ArgumentParser(prog="python -m sandbox_aws", description="Sandbox AWS (STS + KMS) endpoint.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4566, help="port to bind, 0 for any free port (default: 4566)")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = SandboxServer(host=args.host, port=args.port)
    url = server.start()
    print(f"sandbox AWS listening on {url}", flush=True)
    try:
        stop_requested.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
