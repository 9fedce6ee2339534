"""The Content-Security-Policy in a real browser: pages work under it, and a violation is caught."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import VIEWPORT, is_csp_violation, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_inline_script_is_blocked_and_reported(live_server: Any, browser: Any, people: Any) -> None:
    """The check every browser test relies on: an inline script does not run, and the console says why."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        seen: list[Any] = []
        page.on("console", lambda message: seen.append(message))
        page.goto(f"{live_server.url}/accounts/login/")
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.injected = true';"
            " document.body.appendChild(s); }"
        )
        page.wait_for_timeout(200)
        assert page.evaluate("window.injected === undefined")
        assert any(is_csp_violation(message) for message in seen), [m.text for m in seen]
    finally:
        context.close()


def test_the_api_docs_work_under_the_policy(live_server: Any, new_context: Any, people: Any) -> None:
    """Swagger UI starts from a script file and renders the operations, with no violation."""
    page = new_context().new_page()
    log_in(page, live_server.url, "alice", "alice-password-123")
    page.goto(f"{live_server.url}/api/v1/docs/")
    page.locator(".opblock").first.wait_for()
    page.get_by_text("BYOK Portal API").first.wait_for()
