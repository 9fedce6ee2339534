"""gunicorn settings for the BYOK Portal (``gunicorn -c deploy/gunicorn.conf.py``); docs/operations.md explains them.

Everything an operator tunes comes from the environment (the systemd unit's
EnvironmentFile, deploy/byok-portal.env.example), so this file stays as shipped.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

wsgi_app = "byok_portal.wsgi:application"

# Behind the reverse proxy on the same host: listen on loopback only. The portal trusts the
# proxy's X-Forwarded-Proto (BYOK_BEHIND_TLS_PROXY=true), so nobody else may reach this port.
bind = os.environ.get("BYOK_BIND", "127.0.0.1:8000")
# gunicorn's rule of thumb; each worker holds one database connection per thread.
workers = int(os.environ.get("WEB_CONCURRENCY", str(multiprocessing.cpu_count() * 2 + 1)))
threads = int(os.environ.get("BYOK_WEB_THREADS", "1"))
# A key operation makes a few KMS calls, each bounded by BYOK_AWS_CONNECT_TIMEOUT + BYOK_AWS_READ_TIMEOUT
# per attempt; a worker silent for longer than this is stuck and is replaced.
timeout = int(os.environ.get("BYOK_WEB_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
# Only the proxy may say the client spoke HTTPS (gunicorn's wsgi.url_scheme); Django reads the same header.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
# The portal's own JSON logs carry the request id; gunicorn's access line adds the timing.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


def on_starting(server: Any) -> None:
    """Refuse to start with /metrics counting per process only: PROMETHEUS_MULTIPROC_DIR must exist (see below)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and not os.path.isdir(directory):
        raise SystemExit(f"PROMETHEUS_MULTIPROC_DIR={directory} does not exist; create it (deploy/systemd/byok.conf)")


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges from /metrics (prometheus-client's multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
