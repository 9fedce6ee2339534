"""Prometheus metrics at ``/metrics`` (SPEC §14), with prometheus-client.

What is measured: request latency by route, operations by kind and outcome (counted
when their audit event commits), KMS calls, errors and throttles by operation (the AWS
layer), Celery task outcomes, and the audit head's sequence (read from the database
at scrape time, so every process reports the same).

Several processes: gunicorn's workers and the Celery workers each count in their own
memory, so with ``PROMETHEUS_MULTIPROC_DIR`` set (deploy/gunicorn.conf.py, the systemd
units) prometheus-client's multiprocess mode writes the counts to files in that
directory and ``/metrics`` adds up every process' files. Without it (development,
tests) the process' own registry is served.

``/metrics`` is not public: it answers 404 unless the request bears
``BYOK_METRICS_TOKEN`` (``Authorization: Bearer …``) or comes straight (no
``X-Forwarded-For``: not through the reverse proxy) from an address in
``BYOK_METRICS_ALLOWED_IPS``. Both are empty by default: nobody may scrape until an
operator says who may.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUEST_LATENCY = Histogram(
    "byok_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern, method and status.",
    ["route", "method", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OPERATIONS = Counter(
    "byok_operations",
    "Portal operations by kind and outcome (one per committed audit event).",
    ["operation", "outcome"],
)
KMS_CALLS = Counter(
    "byok_kms_calls", "AWS KMS calls, by KMS operation (each answered call, retries included).", ["operation"]
)
KMS_ERRORS = Counter(
    "byok_kms_errors", "AWS KMS calls that failed in the end, by KMS operation and AWS code.", ["operation", "code"]
)
KMS_THROTTLES = Counter(
    "byok_kms_throttles", "KMS attempts AWS answered with ThrottlingException, by KMS operation.", ["operation"]
)
CELERY_TASKS = Counter("byok_celery_tasks", "Celery task runs by task name and outcome.", ["task", "outcome"])

# Scrape-time gauges handed in by apps (AppConfig.ready): name -> (help, reader). The kernel
# knows no models; the audit app tells it how to read its head.
_scrape_gauges: dict[str, tuple[str, Callable[[], float | None]]] = {}


def register_scrape_gauge(name: str, documentation: str, read: Callable[[], float | None]) -> None:
    """A gauge read when /metrics is scraped (``read`` returns None when there is nothing to say)."""
    _scrape_gauges[name] = (documentation, read)


class _ScrapeGauges(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (documentation, read) in _scrape_gauges.items():
            value = read()
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)


_scrape_collector = _ScrapeGauges()
REGISTRY.register(_scrape_collector)


# --- what other layers feed ----------------------------------------------------------------


def count_operations(events: Iterable[tuple[str, str]]) -> None:
    for operation, outcome in events:
        OPERATIONS.labels(operation=operation, outcome=outcome).inc()


def count_kms_attempt(operation: str, error_code: str | None) -> None:
    """One KMS attempt that AWS answered; a throttle counts under its operation (quota pacing feeds on this)."""
    KMS_CALLS.labels(operation=operation).inc()
    if error_code == "ThrottlingException":
        KMS_THROTTLES.labels(operation=operation).inc()


def count_kms_error(operation: str, code: str) -> None:
    KMS_ERRORS.labels(operation=operation, code=code).inc()


def count_task(task: str, outcome: str) -> None:
    CELERY_TASKS.labels(task=task, outcome=outcome).inc()


def mark_process_dead(pid: int) -> None:
    """Multiprocess mode: a finished process' live gauges go (its counters stay counted)."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        multiprocess.mark_process_dead(pid)


# --- request latency --------------------------------------------------------------------------


class RequestLatencyMiddleware:
    """Times every request; labelled by the route *pattern* (``keys/<uuid:pk>/``), so labels stay few."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = str(match.route) if match is not None and match.route else "<unmatched>"
        REQUEST_LATENCY.labels(route=route, method=request.method or "", status=str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


# --- the endpoint -----------------------------------------------------------------------------


def _bearer_ok(request: HttpRequest) -> bool:
    token = str(settings.BYOK_METRICS_TOKEN or "")
    offered = request.META.get("HTTP_AUTHORIZATION", "")
    return bool(token) and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode())


def _address_ok(request: HttpRequest) -> bool:
    # Through the reverse proxy every client has the proxy's address: only direct scrapes count.
    if "HTTP_X_FORWARDED_FOR" in request.META:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.BYOK_METRICS_ALLOWED_IPS)


def _registry() -> Any:
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_scrape_collector)
    return registry


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format; 404 to anyone neither holding the token nor scraping from an allowed address."""
    if not (_bearer_ok(request) or _address_ok(request)):
        raise Http404
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
