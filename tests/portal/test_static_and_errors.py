"""Production pages with DEBUG off (issue 12, item 14): collected static files or no start at all.

Whitenoise's manifest storage needs ``collectstatic``; without it every page, the 404
page included, answered 500. The portal now refuses to start naming the step, and
with the step done, pages and unknown URLs answer as they should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.test import Client, override_settings

from byok_portal.checks import STARTUP_TAG

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


def startup_errors() -> list[str]:
    return [m.id or "" for m in run_checks(tags=[STARTUP_TAG], include_deployment_checks=True) if m.is_serious()]


@pytest.fixture(scope="module")
def collected_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """STATIC_ROOT after the README's `collectstatic` step, with production's storage."""
    root = tmp_path_factory.mktemp("static")
    with override_settings(STORAGES=MANIFEST_STORAGES, STATIC_ROOT=root):
        call_command("collectstatic", "--noinput", verbosity=0)
    return root


@pytest.fixture
def production_static(settings: Any, collected_static: Path) -> Path:
    settings.DEBUG = False
    settings.STORAGES = MANIFEST_STORAGES
    settings.STATIC_ROOT = collected_static
    return collected_static


@pytest.mark.parametrize("entry_point", ["byok_portal.wsgi", "byok_portal.asgi"])
def test_the_web_application_refuses_to_start_naming_collectstatic_when_static_was_not_collected(
    tmp_path: Path, entry_point: str
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "byok_portal.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "s" * 60,
        "ALLOWED_HOSTS": "byok.example.com",
        "BYOK_KEK": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
        "BYOK_AUDIT_KEY": "audit",
        "BYOK_TOKEN_KEY": "token",
        "CELERY_BROKER_URL": "memory://",
        "STATIC_ROOT": str(tmp_path / "never-collected"),
    }
    result = subprocess.run(
        [sys.executable, "-c", f"import {entry_point}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "The portal refuses to start" in result.stderr
    assert "byok.E001" in result.stderr
    assert "python manage.py collectstatic --noinput" in result.stderr


def test_the_check_names_the_step_when_the_manifest_is_missing(settings: Any, tmp_path: Path) -> None:
    settings.STORAGES = MANIFEST_STORAGES
    settings.STATIC_ROOT = tmp_path
    assert startup_errors() == ["byok.E001"]


def test_the_check_passes_after_collectstatic(production_static: Path) -> None:
    assert startup_errors() == []


def test_the_check_refuses_a_manifest_older_than_the_code(
    settings: Any, production_static: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "static"
    stale.mkdir()
    manifest = json.loads((production_static / "staticfiles.json").read_text())
    del manifest["paths"]["css/portal.css"]
    (stale / "staticfiles.json").write_text(json.dumps(manifest))
    settings.STATIC_ROOT = stale
    assert startup_errors() == ["byok.E002"]


def test_the_check_is_silent_in_development(settings: Any, tmp_path: Path) -> None:
    development = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**MANIFEST_STORAGES, "staticfiles": development}
    settings.STATIC_ROOT = tmp_path
    assert startup_errors() == []


@pytest.mark.django_db
def test_pages_render_with_production_static_files(production_static: Path) -> None:
    client = Client(raise_request_exception=False)
    login = client.get("/accounts/login/")
    assert login.status_code == 200
    assert "/static/css/portal." in login.content.decode()  # the hashed name from the manifest
    assert ".css" in login.content.decode()


@pytest.mark.django_db
def test_an_unknown_page_is_a_404_page(production_static: Path) -> None:
    response = Client(raise_request_exception=False).get("/no/such/page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "Not found" in response.content.decode()


@pytest.mark.django_db
def test_an_unknown_api_url_is_a_json_404(production_static: Path) -> None:
    for path in ("/api/v1/no-such-endpoint/", "/api/nothing", "/api/v1/keys/x/y/z/"):
        response = Client(raise_request_exception=False).get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found.", "code": "not_found"}, path


@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500_under_the_api_and_a_page_elsewhere(production_static: Path) -> None:
    from django.test import RequestFactory

    from byok_portal.handlers import server_error

    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        api = server_error(RequestFactory().get("/api/v1/keys/"))
        page = server_error(RequestFactory().get("/keys/"))
    assert api.status_code == 500
    assert json.loads(api.content) == {"detail": "Internal server error.", "code": "server_error"}
    assert page.status_code == 500
    assert "Something went wrong" in page.content.decode()
