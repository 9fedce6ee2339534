"""Checks that stop a production process from starting in a state where it could only answer 500.

Registered as deployment checks, so ``manage.py check --deploy`` reports them, and run
by ``byok_portal.wsgi`` before the first request: gunicorn refuses to boot a worker
instead of serving a portal whose every page fails. ``migrate`` and ``collectstatic``
do not run deployment checks, so the step that fixes the problem is never blocked by it.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.staticfiles.finders import get_finders
from django.contrib.staticfiles.storage import ManifestFilesMixin
from django.core.checks import CheckMessage, Error, register, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import storages

STARTUP_TAG = "byok_startup"
COLLECTSTATIC = "python manage.py collectstatic --noinput"


@register(STARTUP_TAG, deploy=True)
def static_files_collected(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With manifest storage (production), every static file must be in the collected manifest.

    ``{% static %}`` looks each file up in ``staticfiles.json``; a missing manifest (or
    one older than the code) turns every page, the 404 page included, into a 500.
    """
    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):
        return []
    manifest = storage.read_manifest()
    if manifest is None:
        return [
            Error(
                f"Static files have not been collected: {storage.manifest_name} is missing from STATIC_ROOT "
                f"({storage.location}).",
                hint=f"Run `{COLLECTSTATIC}` (with the same settings) before starting the portal.",
                id="byok.E001",
            )
        ]
    collected, _hash = storage.load_manifest()
    ignore_patterns = apps.get_app_config("staticfiles").ignore_patterns
    missing = sorted(
        path for finder in get_finders() for path, _ in finder.list(ignore_patterns) if path not in collected
    )
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return [
            Error(
                f"Collected static files are out of date: {shown} not in {storage.manifest_name}.",
                hint=f"Run `{COLLECTSTATIC}` again after every upgrade.",
                id="byok.E002",
            )
        ]
    return []


def refuse_to_start_if_misconfigured() -> None:
    """Raise ImproperlyConfigured naming the fix when a start-up check fails (called by the WSGI entry point)."""
    errors = [m for m in run_checks(tags=[STARTUP_TAG], include_deployment_checks=True) if m.is_serious()]
    if errors:
        raise ImproperlyConfigured(
            "The portal refuses to start:\n" + "\n".join(f"{e.id}: {e.msg} {e.hint or ''}".rstrip() for e in errors)
        )
