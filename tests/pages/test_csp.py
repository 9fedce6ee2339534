"""The Content-Security-Policy (SPEC §8, issue 12 item 13): every page carries it and needs nothing it forbids.

The policy allows scripts and styles only from the portal's own files. A page with an
inline ``<script>``, an ``on*`` handler, a ``javascript:`` URL, a ``<style>`` element or a
``style`` attribute would be broken by it, so every page the portal renders is fetched
here and its HTML searched for them. The route list is checked against the URL
configuration, so a new page cannot be added without being rendered here.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from approvals.models import ApprovalPolicy
from byok_portal.dual_control import ApprovalPending
from byok_portal.vocabulary import Operation
from jobs.services import JobRequest, job_create
from keys import services
from keys.operations import REGISTRY
from tests.keys.helpers import public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db


class InlineCode(HTMLParser):
    """Collects everything in a page that a ``script-src 'self'; style-src 'self'`` policy blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if not values.get("src"):
                self.found.append("<script> without src")
            self._in_script = True
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=…> handler")
            if name == "style":
                self.found.append(f"<{tag} style={value!r}>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append(f"inline script text: {data.strip()[:60]!r}")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


# Every page route (name → path template). POST-only routes are listed apart; the test below holds
# this list to the URL configuration.
PAGES = {
    "login": "/accounts/login/",
    "dashboard": "/",
    "account": "/accounts/",
    "keystores:list": "/keystores/",
    "keystores:create": "/keystores/new/",
    "keystores:detail": "/keystores/{keystore}/",
    "keystores:edit": "/keystores/{keystore}/edit/",
    "keystores:delete": "/keystores/{keystore}/delete/",
    "keystores:member-remove": "/keystores/{keystore}/members/{member}/remove/",
    "keys:list": "/keys/",
    "keys:create": "/keys/new/",
    "keys:detail": "/keys/{key}/",
    "keys:edit": "/keys/{key}/edit/",
    "keys:prepare-download": "/keys/{key}/prepare-download/",
    "keys:download": "/keys/{key}/download/",
    "keys:action": "/keys/{key}/schedule-deletion/",
    "audit:event-list": "/audit/",
    "approvals:inbox": "/approvals/",
    "approvals:detail": "/approvals/{approval}/",
    "approvals:policy": "/approvals/policy/{keystore}/",
    "reports:index": "/reports/",
    "notifications:preferences": "/notifications/preferences/",
    "notifications:webhooks": "/notifications/keystores/{keystore}/webhooks/",
    "jobs:list": "/jobs/",
    "jobs:detail": "/jobs/{job}/",
    "api-docs": "/api/v1/docs/",
    "admin:index": "/admin/",
    "admin:accounts_user_changelist": "/admin/accounts/user/",
    "admin:accounts_user_add": "/admin/accounts/user/add/",
    "admin:accounts_user_change": "/admin/accounts/user/{member}/change/",
    "admin:keys_key_changelist": "/admin/keys/key/",
    "admin:keys_key_change": "/admin/keys/key/{key}/change/",
    "admin:audit_auditevent_changelist": "/admin/audit/auditevent/",
    "admin:tokens_apitoken_changelist": "/admin/tokens/apitoken/",
    "tokens:list": "/tokens/",
    "tokens:service-accounts": "/tokens/service-accounts/",
    "tokens:service-account-token": "/tokens/service-accounts/{robot}/tokens/new/",
}
POST_ONLY = {
    "keystores:test-connection",
    "keystores:member-set",
    "keystores:sandbox-create-role",
    "logout",
    "approvals:approve",
    "approvals:reject",
    "approvals:cancel",
    "approvals:end",
    "tokens:revoke",
    "jobs:start",
    "jobs:cancel",
}
# Pages for superusers only.
SUPERUSER_PAGES = ("admin:", "tokens:service-account")
# Steps of the login that need a half-finished login in the session; covered through the browser tests.
LOGIN_STEPS = {"otp_verify", "otp_enrol"}
# Health probes and /metrics answer JSON or Prometheus text to machines, not pages to people.
PROBES = {"healthz", "readyz", "metrics"}
# File downloads (CSV, PDF), not HTML.
FILES = {"reports:download"}


def _page_route_names() -> set[str]:
    """Named routes of the portal's pages (the admin and the JSON API are not pages the portal writes)."""
    names: set[str] = set()

    def walk(patterns: list[Any], namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace in ("admin",) or str(entry.pattern).startswith(("api/", "oidc/")):
                    continue
                walk(entry.url_patterns, f"{namespace}{entry.namespace}:" if entry.namespace else namespace)
            elif isinstance(entry, URLPattern) and entry.name:
                names.add(namespace + entry.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_page_route_is_rendered_below() -> None:
    missing = _page_route_names() - set(PAGES) - POST_ONLY - LOGIN_STEPS - PROBES - FILES
    assert not missing, f"pages not covered by the CSP test: {sorted(missing)}"


@pytest.fixture
def ids(people: Any, keystore: Any) -> dict[str, Any]:
    key = services.key_create(
        actor=people.actor(people.bob), keystore_id=keystore.pk, name="csp", alias="alias/csp", tags={"a": "b"}
    ).key
    services.key_prepare_download(actor=people.actor(people.carol), key_id=key.pk, public_key_pem=public_pem())
    job = job_create(actor=people.actor(people.alice), request=JobRequest(operation="deactivate", keys=[key.pk]))
    # A request waiting for approval: the inbox, the request's page and the key page all show it.
    ApprovalPolicy.objects.create(keystore=keystore, disable=1)
    with pytest.raises(ApprovalPending) as pending:
        REGISTRY[Operation.DEACTIVATE].run(people.actor(people.bob), key.pk)
    approval = pending.value.approval_request["id"]
    from accounts.services import create_service_account
    from tokens.services import token_create

    robot = create_service_account(actor=people.actor(people.root), username="csp-robot")
    token_create(actor=people.actor(people.root), owner=robot, name="robot", scope="read", expires_in_days=1)
    token_create(actor=people.actor(people.alice), name="mine", scope="write", expires_in_days=1)
    return {
        "keystore": keystore.pk,
        "key": key.pk,
        "member": people.dan.pk,
        "approval": approval,
        "robot": robot.pk,
        "job": job.pk,
    }


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_carries_the_policy_and_no_inline_code(name: str, people: Any, ids: dict[str, Any]) -> None:
    path = PAGES[name].format(**ids)
    client = verified_client(people.root if name.startswith(SUPERUSER_PAGES) else people.alice)
    if name == "login":
        client.logout()
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    assert inline_code(response.content.decode()) == [], path


def test_the_error_pages_need_no_inline_code_either(people: Any) -> None:
    client = verified_client(people.eve)
    response = client.get(f"/keys/{'0' * 8}-0000-0000-0000-{'0' * 12}/")
    assert response.status_code == 404
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert inline_code(response.content.decode()) == []


def test_the_checker_finds_what_the_policy_blocks() -> None:
    html = (
        '<script>alert(1)</script><script src="/static/js/portal.js"></script><button onclick="x()">'
        '<p style="color:red"><a href="javascript:void(0)">x</a><style>p{}</style>'
    )
    assert len(inline_code(html)) == 6
