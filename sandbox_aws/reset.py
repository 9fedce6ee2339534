"""``python -m sandbox_aws.reset --state FILE [--url URL]``: forget the sandbox's state (``make sandbox-reset``).

If a sandbox answers at ``URL`` it is told to reset (``POST /_sandbox/reset``), which
empties its state file too; otherwise the state file is removed, so the next start
begins from nothing. Either way every KMS key, its material, every role and session is gone.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path

from sandbox_aws.state import StateFile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox_aws.reset", description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, metavar="FILE", help="the sandbox's state file")
    parser.add_argument("--url", default="http://127.0.0.1:4566", help="where a running sandbox would answer")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("--url must be an http(s) URL")
    request = urllib.request.Request(f"{args.url}/_sandbox/reset", data=b"", method="POST")  # noqa: S310  # checked above
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # checked above
            answered = json.loads(response.read()) == {"reset": True}
    except (urllib.error.URLError, OSError):
        answered = False
    if answered:
        print(f"sandbox AWS at {args.url} reset: every KMS key, role and session is gone.")
        return 0
    StateFile(args.state).remove()
    print(f"sandbox AWS state {args.state} removed: the next start begins from nothing.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
