"""``python -m sandbox_aws --host 127.0.0.1 --port 4566 [--state FILE [--reset]]``: run the sandbox AWS.

Without ``--state`` everything is forgotten when the process ends. With it, the sandbox
starts from that file and writes every change back to it (see :mod:`sandbox_aws.state`);
``--reset`` forgets the file's content first. ``--quota-scale N`` (or
``BYOK_SANDBOX_QUOTA_SCALE``) enforces AWS's default KMS quotas times N (see :mod:`sandbox_aws.quotas`).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from sandbox_aws import quotas
from sandbox_aws.server import SandboxServer
from sandbox_aws.state import StateFileError


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    parser = argparse.ArgumentParser(prog="python -m sandbox_aws", description="Sandbox AWS (STS + KMS) endpoint.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4566, help="port to bind, 0 for any free port (default: 4566)")
    parser.add_argument(
        "--state",
        type=Path,
        metavar="FILE",
        help="keep the state (keys, their material, roles, sessions) in FILE across restarts",
    )
    parser.add_argument("--reset", action="store_true", help="with --state: start from nothing, forgetting FILE")
    parser.add_argument(
        "--quota-scale",
        type=float,
        default=None,
        metavar="N",
        help="enforce AWS's default KMS quotas times N (ThrottlingException above them); 0: off",
    )
    args = parser.parse_args(argv)
    if args.reset and args.state is None:
        parser.error("--reset needs --state")

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    if args.quota_scale is not None:
        quotas.set_scale(args.quota_scale)
    server = SandboxServer(host=args.host, port=args.port, state_path=args.state, reset=args.reset)
    try:
        url = server.start()
    except StateFileError as exc:
        parser.exit(2, f"sandbox AWS: {exc}\n")
    where = f"state in {args.state}" if args.state else "state in memory only"
    print(f"sandbox AWS listening on {url} ({where})", flush=True)
    try:
        stop_requested.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
