"""Browser tests: headless Chromium (Debian's package) driven by Playwright against ``live_server``.

Playwright's own browser download does not work here, so the system Chromium is
launched by path. Without it the tests skip with a reason (CI installs it, and
counts a skip as a failure).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django_otp.oath import totp

CHROMIUM = Path(os.environ.get("BYOK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_JS = Path(settings.BASE_DIR) / "node_modules" / "axe-core" / "axe.min.js"
# A laptop screen.
VIEWPORT = {"width": 1366, "height": 900}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(django_db_setup: Any) -> Iterator[Any]:
    """One headless Chromium per test module.

    Playwright's sync API keeps an event loop running in this thread, and Django
    then refuses every (synchronous) database call as "async-unsafe". The check is
    relaxed only while the browser runs: started after the test database exists,
    closed (and the check restored) at the end of the module.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is in requirements-dev.txt
        pytest.skip("playwright is not installed")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def is_csp_violation(message: Any) -> bool:
    """Chromium reports what the Content-Security-Policy blocked as a console error naming the policy."""
    return message.type == "error" and "Content Security Policy" in message.text


@pytest.fixture
def new_context(browser: Any) -> Iterator[Any]:
    """Fresh browser contexts (separate cookie jars: separate people), closed after the test.

    Every page of every context is watched for Content-Security-Policy violations: the test
    fails if the browser blocked anything (an inline script or style, a foreign resource).
    """
    contexts: list[Any] = []
    violations: list[str] = []

    def make(viewport: dict[str, int] | None = None, **options: Any) -> Any:
        context = browser.new_context(viewport=viewport or VIEWPORT, accept_downloads=True, locale="en-GB", **options)
        context.set_default_timeout(15_000)
        context.on(
            "console",
            lambda message: (
                violations.append(f"{message.page.url if message.page else '?'}: {message.text}")
                if is_csp_violation(message)
                else None
            ),
        )
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not violations, "The browser reported Content-Security-Policy violations:\n" + "\n".join(violations)


def current_totp(secret_b32: str) -> str:
    """The code an authenticator app shows now for a base32 secret."""
    padded = secret_b32 + "=" * (-len(secret_b32) % 8)
    return f"{totp(base64.b32decode(padded)):06d}"


def log_in(page: Any, base_url: str, username: str, password: str) -> None:
    """The real local login: password, then TOTP enrolment (first login) with a code computed like an app would."""
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/accounts/login/enrol/")
    secret = page.locator("#totp-secret").inner_text().strip()
    page.get_by_label("Authentication code").fill(current_totp(secret))
    page.get_by_role("button", name="Confirm and log in").click()
    page.wait_for_url(f"{base_url}/")


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot into artifacts/screenshots/ (CI keeps the folder as an artifact)."""
    path = screenshot_path(name)
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Run axe-core (from npm, injected from node_modules) on the page; return its violations."""
    if not AXE_JS.exists():
        pytest.fail(f"{AXE_JS} is missing: run `npm ci` (package.json lists axe-core)")
    # Evaluated through the DevTools protocol, not added as a <script> element: the page's
    # Content-Security-Policy (rightly) refuses inline scripts, and axe is not the page's own.
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE_JS.read_text())
    result = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations'],"
        " runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def record_axe(name: str, violations: list[dict[str, Any]]) -> None:
    """Keep axe's findings as a CI artifact, one JSON file per page."""
    (ARTIFACTS / "axe").mkdir(parents=True, exist_ok=True)
    summary = [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [node["target"] for node in v["nodes"]][:10],
        }
        for v in violations
    ]
    (ARTIFACTS / "axe" / f"{name}.json").write_text(json.dumps(summary, indent=2))


class RestartableSandbox:
    """A sandbox AWS with a state file, stopped and started again on the same port, as ``make run`` restarts it."""

    def __init__(self, state_path: Path) -> None:
        from sandbox_aws.server import SandboxServer

        self.state_path = state_path
        self.server = SandboxServer(state_path=state_path, reset=True)
        self.url = self.server.start()

    def restart(self) -> None:
        """Stop; forget everything in memory, as a process that ends does; start again from the state file."""
        from sandbox_aws import control
        from sandbox_aws.server import SandboxServer

        port = self.server.port if self.server.port else int(self.url.rsplit(":", 1)[1])
        self.server.stop()
        control.reset_everything()  # the file is no longer attached: only memory is emptied
        self.server = SandboxServer(port=port, state_path=self.state_path)
        assert self.server.start() == self.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable_sandbox(aws_sandbox: str, settings: Any, tmp_path: Path) -> Iterator[RestartableSandbox]:
    """The portal talks to a sandbox of its own, which keeps its state in ``tmp_path`` and can be restarted."""
    from byok_portal import aws

    sandbox = RestartableSandbox(tmp_path / "sandbox" / "state.json")
    settings.BYOK_SANDBOX_URL = sandbox.url
    yield sandbox
    sandbox.stop()
    aws.credential_cache.clear()
