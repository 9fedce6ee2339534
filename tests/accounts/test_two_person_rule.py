"""The two-person rule against every way around it (issue 5 §5, SPEC §2-§4), end to end.

People log in through the real OpenID provider (``tests/oidc_provider``) and act
through the portal's real surfaces only: the REST API (``/api/v1/keys/{id}/
prepare-download/`` and ``.../download/``) with a bearer ID token or with the
browser's session (CSRF enforced), and the key pages' forms. The rule compares
the ``(iss, sub)`` of whoever authenticated the request, never the Django account.

Every attempt is checked three ways: the exact status (and ``code`` for the
API), exactly one new audit event on the key with the right outcome and reason,
and, for a successful download, material that unwraps with the test's private
key to the key's KCV.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass
from html import unescape
from typing import Any, Protocol

import pytest
import requests
import time_machine
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from django.contrib.sessions.backends.db import SessionStore
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.identity import SESSION_IDENTITY_KEY, Actor
from accounts.models import User
from audit.models import AuditEvent
from byok_portal.web import SESSION_OIDC_LOGIN_KEY
from keys.custody import kcv
from keys.models import Key
from keys.services import key_create
from keystores.models import Keystore, Role
from keystores.services import membership_set
from tests.accounts.conftest import current_code
from tests.custody.softhsm import BACKENDS, select_backend
from tests.keys.helpers import current_sealed, public_pem, rsa_private_key
from tests.oidc_provider.fixtures import OIDCProvider

pytestmark = [pytest.mark.oidc, pytest.mark.django_db(transaction=True)]

HTTP_TIMEOUT = 10
ADA, GRACE = "sub-ada", "sub-grace"  # custodians
LINUS = "sub-linus"  # keystore admin
IDA = "sub-ida"  # auditor
OTTO = "sub-otto"  # outsider: no role in the keystore

TWO_PERSON_MESSAGE = "Two-person rule: the person who prepared this download cannot also download it."
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- clients: the REST API with a bearer token or a browser session, and the pages -------------


class ApiClient(Protocol):
    base: str

    def prepare(self, key: Key | uuid.UUID, public_key: str | None = None) -> requests.Response: ...

    def download(self, key: Key | uuid.UUID) -> requests.Response: ...


def prepare_url(base: str, key: Key | uuid.UUID) -> str:
    return f"{base}/api/v1/keys/{getattr(key, 'pk', key)}/prepare-download/"


def download_url(base: str, key: Key | uuid.UUID) -> str:
    return f"{base}/api/v1/keys/{getattr(key, 'pk', key)}/download/"


class Bearer:
    """A REST client holding an ID token issued by the provider."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, url: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(url, json=body or {}, headers=self.headers, timeout=HTTP_TIMEOUT)

    def prepare(self, key: Key | uuid.UUID, public_key: str | None = None) -> requests.Response:
        return self.post(prepare_url(self.base, key), {"public_key": public_key or public_pem()})

    def download(self, key: Key | uuid.UUID) -> requests.Response:
        return self.post(download_url(self.base, key))


class Browser:
    """A browser (one cookie jar) logged in to the portal.

    Calls the REST API the way a script on the portal's pages would (session cookie,
    ``X-CSRFToken`` from the ``csrftoken`` cookie), and submits the key pages' forms
    with the token the form carries.
    """

    def __init__(self, base: str, http: requests.Session) -> None:
        self.base, self.http = base, http

    @property
    def session_key(self) -> str:
        return str(self.http.cookies["sessionid"])

    @property
    def identity(self) -> tuple[str, str] | None:
        """The ``(iss, sub)`` the portal keeps in this browser's session."""
        value = SessionStore(session_key=self.session_key).get(SESSION_IDENTITY_KEY)
        return (value[0], value[1]) if value else None

    def csrf_token(self) -> str:
        token = self.http.cookies.get("csrftoken")
        if token is None:  # any page with a form (the header's logout button) sets it
            assert self.http.get(f"{self.base}/accounts/", timeout=HTTP_TIMEOUT).status_code == 200
            token = self.http.cookies["csrftoken"]
        return str(token)

    def post(self, url: str, body: dict[str, Any] | None = None, *, csrf: bool = True) -> requests.Response:
        headers = {"X-CSRFToken": self.csrf_token()} if csrf else {}
        return self.http.post(url, json=body or {}, headers=headers, timeout=HTTP_TIMEOUT)

    def prepare(self, key: Key | uuid.UUID, public_key: str | None = None) -> requests.Response:
        return self.post(prepare_url(self.base, key), {"public_key": public_key or public_pem()})

    def download(self, key: Key | uuid.UUID) -> requests.Response:
        return self.post(download_url(self.base, key))

    # --- the pages ---------------------------------------------------------------------

    def submit(self, path: str, data: dict[str, str] | None = None) -> requests.Response:
        """Open the page and post its form; without a form (refused page), post with the cookie's token."""
        url = f"{self.base}{path}"
        page = self.http.get(url, timeout=HTTP_TIMEOUT)
        found = _CSRF_INPUT.search(page.text) if page.status_code == 200 else None
        token = unescape(found.group(1)) if found else self.csrf_token()
        return self.http.post(
            url, data={"csrfmiddlewaretoken": token, **(data or {})}, allow_redirects=False, timeout=HTTP_TIMEOUT
        )

    def prepare_page(self, key: Key | uuid.UUID, public_key: str | None = None) -> requests.Response:
        key_id = getattr(key, "pk", key)
        return self.submit(f"/keys/{key_id}/prepare-download/", {"public_key": public_key or public_pem()})

    def download_page(self, key: Key | uuid.UUID) -> requests.Response:
        return self.submit(f"/keys/{getattr(key, 'pk', key)}/download/")

    def follow(self, response: requests.Response) -> str:
        """The page a redirect leads to (where the portal shows its messages)."""
        assert response.status_code == 302, (response.status_code, response.text[:500])
        page = self.http.get(f"{self.base}{response.headers['Location']}", timeout=HTTP_TIMEOUT)
        assert page.status_code == 200
        return unescape(page.text)


@dataclass
class Person:
    """Someone at the OpenID provider, with the browser they logged in with."""

    sub: str
    portal: Portal
    browser: Browser

    @property
    def user(self) -> User:
        return User.objects.get(oidc_issuer=self.portal.provider.issuer, oidc_subject=self.sub)

    def api(self) -> Bearer:
        """A REST client with a fresh ID token from the provider's code flow."""
        return Bearer(self.portal.base, self.portal.provider.code_flow_id_token(self.sub))

    def api_now(self) -> Bearer:
        """A REST client with an ID token signed by the provider, issued at the (possibly travelled) clock."""
        now = int(time.time())
        token = self.portal.provider.mint({"sub": self.sub, "iat": now, "exp": now + 600})
        return Bearer(self.portal.base, token)

    def new_browser(self) -> Browser:
        """Another browser (a second, independent session) for the same person."""
        return self.portal.login(self.sub)


class Portal:
    """The live portal, pointed at the provider, with one keystore."""

    def __init__(self, provider: OIDCProvider, base: str, keystore: Keystore) -> None:
        self.provider, self.base, self.keystore = provider, base, keystore

    def login(self, sub: str, *, into: Browser | None = None) -> Browser:
        """The full browser-style code flow for ``sub``; ``into``: within an existing browser."""
        http = self.provider.browser_login(self.base, sub, http=into.http if into else None)
        return Browser(self.base, http)

    def grant(self, user: User, role: Role) -> None:
        membership_set(actor=Actor.system("test"), keystore_id=self.keystore.pk, user=user, role=role)

    def person(self, sub: str, role: Role | None = Role.CUSTODIAN) -> Person:
        """``sub`` logs in (which provisions their account) and gets ``role`` in the keystore."""
        person = Person(sub=sub, portal=self, browser=self.login(sub))
        if role is not None:
            self.grant(person.user, role)
        return person


@pytest.fixture
def portal(oidc_settings: OIDCProvider, live_server: Any, keystore: Keystore) -> Portal:
    return Portal(oidc_settings, live_server.url, keystore)


@pytest.fixture(params=BACKENDS)
def key(request: pytest.FixtureRequest, settings: Any, keystore: Keystore, people: Any) -> Key:
    """The key downloaded, its material held by each custody backend in turn (SPEC §13)."""
    select_backend(request, settings, request.param)
    return key_create(actor=people.actor(people.alice), keystore_id=keystore.pk, name="payments-2026").key


@pytest.fixture
def ada(portal: Portal) -> Person:
    return portal.person(ADA)


@pytest.fixture
def grace(portal: Portal) -> Person:
    return portal.person(GRACE)


# --- what each attempt must leave behind ------------------------------------------------------


class Trail:
    """The key's audit events since the last check: every attempt must add exactly one."""

    def __init__(self, key: Key, issuer: str) -> None:
        self.key, self.issuer = key, issuer
        self.seq = self._last_seq()

    def _last_seq(self) -> int:
        last = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
        return int(last or 0)

    def one(self, operation: str, outcome: str, reason: str, sub: str, *, iss: str | None = None) -> AuditEvent:
        events = list(AuditEvent.objects.filter(key_id=self.key.pk, seq__gt=self.seq).order_by("seq"))
        self.seq = self._last_seq()
        assert [(e.operation, e.outcome, e.reason) for e in events] == [(operation, outcome, reason)]
        event = events[0]
        assert (event.actor_iss, event.actor_sub) == (iss or self.issuer, sub)
        return event

    def none(self) -> None:
        events = list(AuditEvent.objects.filter(key_id=self.key.pk, seq__gt=self.seq).order_by("seq"))
        assert [(e.operation, e.outcome, e.reason) for e in events] == []

    def prepared(self, sub: str, **kw: Any) -> AuditEvent:
        return self.one("prepare_download", "success", "", sub, **kw)

    def downloaded(self, sub: str, **kw: Any) -> AuditEvent:
        return self.one("download", "success", "", sub, **kw)

    def refused(self, operation: str, reason: str, sub: str, **kw: Any) -> AuditEvent:
        return self.one(operation, "refused", reason, sub, **kw)


@pytest.fixture
def trail(portal: Portal, key: Key) -> Trail:
    return Trail(key, portal.provider.issuer)


def expect(response: requests.Response, status: int, code: str | None = None, **fields: Any) -> dict[str, Any]:
    """The response has exactly this status (and error ``code`` and fields); returns its JSON body."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    if code is not None:
        assert body["code"] == code, body
    for name, value in fields.items():
        assert body[name] == value, body
    return body


def assert_unwraps_to_the_key(document: dict[str, Any], key: Key) -> None:
    """RSA-OAEP with the test's private key gives 256-bit material whose KCV is the key's.

    SHA-256 OAEP from software custody; SHA-1 OAEP from SoftHSM2 2.6, which offers no other.
    """
    assert document["key_id"] == str(key.pk)
    key.refresh_from_db()
    expected = "RSAES_OAEP_SHA_1" if (current_sealed(key) or b"").startswith(b"\x03") else "RSAES_OAEP_SHA_256"
    assert document["wrapping_algorithm"] == expected
    hash_ = hashes.SHA1() if expected == "RSAES_OAEP_SHA_1" else hashes.SHA256()  # noqa: S303 - SoftHSM2's OAEP
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hash_), algorithm=hash_, label=None)
    material = rsa_private_key().decrypt(base64.b64decode(document["wrapped_key_material"]), oaep)
    assert len(material) == 32
    key.refresh_from_db()
    assert kcv(material) == key.kcv == document["kcv"]


def assert_prepared_by(key: Key, issuer: str, sub: str) -> None:
    key.refresh_from_db()
    assert key.download_prepared
    assert (key.download_prepared_by_iss, key.download_prepared_by_sub) == (issuer, sub)


def assert_not_prepared(key: Key) -> None:
    key.refresh_from_db()
    assert not key.download_prepared
    assert (key.download_public_key, key.download_prepared_by_sub, key.download_prepared_at) == ("", "", None)


def assert_two_person_refusal(response: requests.Response) -> None:
    expect(response, 403, "two_person_rule", detail=TWO_PERSON_MESSAGE)


def assert_page_refusal(browser: Browser, response: requests.Response, message: str) -> None:
    """The download page refuses with a redirect to the key, whose page says why; no file is served."""
    assert "Content-Disposition" not in response.headers
    assert message in browser.follow(response)


# --- browser, API and a mix --------------------------------------------------------------------


def test_the_preparer_cannot_download_with_a_bearer_token_after_preparing_in_the_browser(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    prepared = ada.browser.prepare_page(key)
    assert prepared.status_code == 302, prepared.text[:500]
    assert "Download prepared" in ada.browser.follow(prepared)
    trail.prepared(ADA)
    assert_prepared_by(key, portal.provider.issuer, ADA)

    assert_two_person_refusal(ada.api().download(key))
    trail.refused("download", "two_person_rule", ADA)
    assert_prepared_by(key, portal.provider.issuer, ADA)

    assert_unwraps_to_the_key(expect(grace.api().download(key), 200), key)
    trail.downloaded(GRACE)
    assert_not_prepared(key)


def test_the_preparer_cannot_download_in_the_browser_after_preparing_with_a_bearer_token(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    body = expect(ada.api().prepare(key), 200, id=str(key.pk), download_prepared=True)
    assert "wrapped_key_material" not in body
    trail.prepared(ADA)

    # The page, then the API from the same logged-in browser.
    assert_page_refusal(ada.browser, ada.browser.download_page(key), TWO_PERSON_MESSAGE)
    trail.refused("download", "two_person_rule", ADA)
    assert_two_person_refusal(ada.browser.download(key))
    trail.refused("download", "two_person_rule", ADA)
    assert_prepared_by(key, portal.provider.issuer, ADA)

    download = grace.browser.download_page(key)
    assert download.status_code == 200, download.text[:500]
    assert download.headers["Content-Type"] == "application/json"
    assert download.headers["Content-Disposition"] == f'attachment; filename="byok-{key.pk}-wrapped.json"'
    assert_unwraps_to_the_key(download.json(), key)
    trail.downloaded(GRACE)
    assert_not_prepared(key)


def test_the_preparer_cannot_download_in_the_browser_after_preparing_through_the_browsers_api_session(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    expect(ada.browser.prepare(key), 200, download_prepared=True)
    trail.prepared(ADA)

    assert_two_person_refusal(ada.api().download(key))
    trail.refused("download", "two_person_rule", ADA)

    assert_unwraps_to_the_key(expect(grace.browser.download(key), 200), key)
    trail.downloaded(GRACE)


def test_the_browsers_api_session_enforces_csrf(portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail):
    expect(
        ada.browser.post(prepare_url(portal.base, key), {"public_key": public_pem()}, csrf=False),
        403,
        "permission_denied",
    )
    assert_not_prepared(key)
    trail.none()

    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    expect(grace.browser.post(download_url(portal.base, key), csrf=False), 403, "permission_denied")
    forged = grace.browser.http.post(
        f"{portal.base}/keys/{key.pk}/download/", data={"csrfmiddlewaretoken": "x" * 64}, timeout=HTTP_TIMEOUT
    )
    assert forged.status_code == 403
    trail.none()
    assert_prepared_by(key, portal.provider.issuer, ADA)


# --- the same person, other ways in ------------------------------------------------------------


@pytest.mark.parametrize("prepared_through", ["new account (bearer)", "old account (browser)"])
def test_the_same_subject_through_two_django_accounts_is_one_person(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail, prepared_through: str
):
    # Ada's browser is logged in to her first account. An operator then unbinds that
    # account from her subject (say, to start her afresh); her next ID token
    # provisions a second account, which is made custodian too. Her old browser
    # session, on the old account, still speaks for (iss, sub-ada).
    old_account = ada.user
    User.objects.filter(pk=old_account.pk).update(username="ada-2019", oidc_subject="")
    new_api = ada.api()
    listed = requests.get(f"{portal.base}/api/v1/keys/", headers=new_api.headers, timeout=HTTP_TIMEOUT)
    assert expect(listed, 200)["results"] == []  # provisioned just now, with no role yet
    new_account = ada.user
    assert new_account.pk != old_account.pk
    portal.grant(new_account, Role.CUSTODIAN)

    through_new = prepared_through.startswith("new")
    preparer, downloader = (new_api, ada.browser) if through_new else (ada.browser, new_api)
    expect(preparer.prepare(key), 200)
    trail.prepared(ADA)
    key.refresh_from_db()
    assert key.updated_by_id == (new_account if through_new else old_account).pk  # which account acted
    assert_two_person_refusal(downloader.download(key))
    trail.refused("download", "two_person_rule", ADA)

    assert_unwraps_to_the_key(expect(grace.api().download(key), 200), key)
    trail.downloaded(GRACE)


def test_the_preparer_cannot_download_in_a_second_browser_session(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    assert ada.browser.prepare_page(key).status_code == 302
    trail.prepared(ADA)

    second = ada.new_browser()
    assert second.session_key != ada.browser.session_key
    assert second.identity == (portal.provider.issuer, ADA)
    assert_page_refusal(second, second.download_page(key), TWO_PERSON_MESSAGE)
    trail.refused("download", "two_person_rule", ADA)
    assert_two_person_refusal(second.download(key))
    trail.refused("download", "two_person_rule", ADA)

    assert_unwraps_to_the_key(expect(grace.browser.download(key), 200), key)
    trail.downloaded(GRACE)


def test_another_person_logging_in_through_the_same_browser_replaces_the_identity(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)

    # Ada logs in through Grace's browser: Grace's identity must not survive in it,
    # or Ada could download "as Grace".
    shared = grace.browser
    graces_session = shared.session_key
    portal.login(ADA, into=shared)
    assert not SessionStore().exists(graces_session)  # flushed, not merely re-keyed
    assert shared.identity == (portal.provider.issuer, ADA)
    assert_two_person_refusal(shared.download(key))
    trail.refused("download", "two_person_rule", ADA)
    assert_page_refusal(shared, shared.download_page(key), TWO_PERSON_MESSAGE)
    trail.refused("download", "two_person_rule", ADA)

    # And back: Grace logs in again in the same browser and is Grace again.
    portal.login(GRACE, into=shared)
    assert shared.identity == (portal.provider.issuer, GRACE)
    assert_unwraps_to_the_key(expect(shared.download(key), 200), key)
    trail.downloaded(GRACE)


def test_a_local_login_in_the_same_browser_replaces_the_oidc_identity(
    portal: Portal, key: Key, people: Any, ada: Person, trail: Trail
):
    # Bob (a local custodian with TOTP) logs in through the browser Ada prepared in.
    device = TOTPDevice.objects.create(user=people.bob, name="phone", confirmed=True)
    expect(ada.browser.prepare(key), 200)
    trail.prepared(ADA)

    shared = ada.browser
    login = shared.submit("/accounts/login/", {"username": "bob", "password": "bob-password-123"})
    assert login.status_code == 302, login.text[:500]
    verify = shared.submit("/accounts/login/verify/", {"code": current_code(device)})
    assert verify.status_code == 302, verify.text[:500]
    session = SessionStore(session_key=shared.session_key)
    assert SESSION_IDENTITY_KEY not in session
    assert SESSION_OIDC_LOGIN_KEY not in session

    assert_unwraps_to_the_key(expect(shared.download(key), 200), key)
    trail.downloaded("bob", iss="local")


# --- after a refusal; single use; expiry -----------------------------------------------------


def test_the_preparer_is_refused_again_after_a_refusal_and_the_preparation_survives(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    key.refresh_from_db()
    prepared = (key.download_public_key, key.download_prepared_by_iss, key.download_prepared_by_sub)
    prepared_at = key.download_prepared_at

    for attempt in (ada.api(), ada.browser, ada.api()):
        assert_two_person_refusal(attempt.download(key))
        trail.refused("download", "two_person_rule", ADA)
    assert_page_refusal(ada.browser, ada.browser.download_page(key), TWO_PERSON_MESSAGE)
    trail.refused("download", "two_person_rule", ADA)
    key.refresh_from_db()
    assert (key.download_public_key, key.download_prepared_by_iss, key.download_prepared_by_sub) == prepared
    assert key.download_prepared_at == prepared_at

    # Preparing again while hers is pending is refused (issue 12): she is still the one who prepared it.
    expect(ada.browser.prepare(key), 409, "invalid_state", reason="download_pending")
    trail.refused("prepare_download", "download_pending", ADA)
    assert_two_person_refusal(ada.api().download(key))
    trail.refused("download", "two_person_rule", ADA)

    assert_unwraps_to_the_key(expect(grace.api().download(key), 200), key)
    trail.downloaded(GRACE)


def test_a_pending_preparation_is_not_taken_over_until_its_preparer_withdraws_it(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail
):
    expect(grace.api().prepare(key), 200)
    trail.prepared(GRACE)
    # Ada cannot silently swap in her own public key (issue 12): grace's preparation stands.
    expect(ada.api().prepare(key), 409, "invalid_state", reason="download_pending")
    trail.refused("prepare_download", "download_pending", ADA)
    assert_prepared_by(key, portal.provider.issuer, GRACE)
    expect(grace.api().post(f"{portal.base}/api/v1/keys/{key.pk}/withdraw-download/"), 200)
    trail.one("withdraw_download", "success", "", GRACE)
    # Now Ada prepares: she is the preparer and cannot download.
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    assert_prepared_by(key, portal.provider.issuer, ADA)

    assert_two_person_refusal(ada.browser.download(key))
    trail.refused("download", "two_person_rule", ADA)
    assert_unwraps_to_the_key(expect(grace.browser.download(key), 200), key)
    trail.downloaded(GRACE)


def test_a_prepared_download_is_single_use(portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail):
    expect(ada.browser.prepare(key), 200)
    trail.prepared(ADA)
    assert_unwraps_to_the_key(expect(grace.api().download(key), 200), key)
    trail.downloaded(GRACE)
    assert_not_prepared(key)

    attempts: list[tuple[ApiClient, str]] = [(grace.api(), GRACE), (grace.browser, GRACE), (ada.api(), ADA)]
    for client, sub in attempts:
        expect(client.download(key), 409, "invalid_state", reason="not_prepared")
        trail.refused("download", "not_prepared", sub)
    assert_page_refusal(grace.browser, grace.browser.download_page(key), "No download has been prepared")
    trail.refused("download", "not_prepared", GRACE)


@pytest.mark.parametrize("ttl", [None, 15 * 60], ids=["default-24h", "configured-15min"])
def test_a_prepared_download_expires(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail, settings: Any, ttl: int | None
):
    if ttl is None:
        ttl = settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS
        assert ttl == 24 * 3600
    else:
        settings.BYOK_DOWNLOAD_PREPARE_TTL_SECONDS = ttl
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    key.refresh_from_db()
    assert key.download_prepared_at is not None
    deadline = key.download_prepared_at + dt.timedelta(seconds=ttl)

    with time_machine.travel(deadline - dt.timedelta(seconds=5)):
        # Still live: the preparer is refused by the two-person rule, not by the clock.
        assert_two_person_refusal(ada.api_now().download(key))
        trail.refused("download", "two_person_rule", ADA)

    with time_machine.travel(deadline, tick=False):  # exactly at the deadline: already expired
        expired = expect(grace.api_now().download(key), 409, "invalid_state", reason="preparation_expired")
        assert expired["detail"] == "The prepared download has expired; prepare it again."
        trail.refused("download", "preparation_expired", GRACE)
        expect(ada.api_now().download(key), 409, "invalid_state", reason="preparation_expired")
        trail.refused("download", "preparation_expired", ADA)

        # Prepared afresh, it works again.
        expect(ada.api_now().prepare(key), 200)
        trail.prepared(ADA)
        assert_unwraps_to_the_key(expect(grace.api_now().download(key), 200), key)
        trail.downloaded(GRACE)


# --- roles: custodian or admin, both people ---------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [(Role.ADMIN, Role.CUSTODIAN), (Role.CUSTODIAN, Role.ADMIN), (Role.ADMIN, Role.ADMIN)],
    ids=["admin-then-custodian", "custodian-then-admin", "admin-then-admin"],
)
def test_admins_count_as_custodians_for_both_steps(portal: Portal, key: Key, trail: Trail, first: Role, second: Role):
    preparer, downloader = portal.person("sub-first", first), portal.person("sub-second", second)

    expect(preparer.api().prepare(key), 200)
    trail.prepared("sub-first")
    assert_two_person_refusal(preparer.browser.download(key))
    trail.refused("download", "two_person_rule", "sub-first")
    assert_unwraps_to_the_key(expect(downloader.api().download(key), 200), key)
    trail.downloaded("sub-second")


@pytest.mark.parametrize("channel", ["bearer", "browser"])
def test_an_auditor_can_neither_prepare_nor_download_through_the_api(
    portal: Portal, key: Key, ada: Person, grace: Person, trail: Trail, channel: str
):
    ida = portal.person(IDA, Role.AUDITOR)
    client: ApiClient = ida.api() if channel == "bearer" else ida.browser

    expect(client.prepare(key), 403, "permission_denied")
    trail.refused("prepare_download", "permission_denied", IDA)
    assert_not_prepared(key)

    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    expect(client.download(key), 403, "permission_denied")
    trail.refused("download", "permission_denied", IDA)
    assert_prepared_by(key, portal.provider.issuer, ADA)  # the refusal consumed nothing

    assert_unwraps_to_the_key(expect(grace.api().download(key), 200), key)
    trail.downloaded(GRACE)


def test_an_auditor_is_refused_by_the_download_pages(portal: Portal, key: Key, ada: Person, trail: Trail):
    ida = portal.person(IDA, Role.AUDITOR)
    assert (
        ida.browser.http.get(f"{portal.base}/keys/{key.pk}/prepare-download/", timeout=HTTP_TIMEOUT).status_code == 403
    )
    assert ida.browser.prepare_page(key).status_code == 403
    trail.refused("prepare_download", "permission_denied", IDA)
    assert_not_prepared(key)

    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    assert ida.browser.http.get(f"{portal.base}/keys/{key.pk}/download/", timeout=HTTP_TIMEOUT).status_code == 403
    refused = ida.browser.download_page(key)
    assert refused.status_code == 403
    trail.refused("download", "permission_denied", IDA)
    assert "Content-Disposition" not in refused.headers
    assert_prepared_by(key, portal.provider.issuer, ADA)


def test_an_auditors_refused_page_attempts_are_audited(portal: Portal, key: Key, ada: Person, trail: Trail):
    ida = portal.person(IDA, Role.AUDITOR)
    assert ida.browser.prepare_page(key).status_code == 403
    trail.refused("prepare_download", "permission_denied", IDA)
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    assert ida.browser.download_page(key).status_code == 403
    trail.refused("download", "permission_denied", IDA)


def outsider_client(portal: Portal, channel: str) -> tuple[Person, ApiClient]:
    otto = portal.person(OTTO, role=None)
    return otto, otto.api() if channel == "bearer" else otto.browser


@pytest.mark.parametrize("channel", ["bearer", "browser"])
def test_an_outsider_gets_404_from_the_api_and_the_pages(portal: Portal, key: Key, ada: Person, channel: str):
    otto, client = outsider_client(portal, channel)

    assert expect(client.prepare(key), 404, "not_found") == client.prepare(uuid.uuid4()).json()
    assert_not_prepared(key)

    expect(ada.api().prepare(key), 200)
    expect(client.download(key), 404, "not_found")
    assert_prepared_by(key, portal.provider.issuer, ADA)

    for path in (f"/keys/{key.pk}/prepare-download/", f"/keys/{key.pk}/download/"):
        assert otto.browser.http.get(f"{portal.base}{path}", timeout=HTTP_TIMEOUT).status_code == 404
    assert otto.browser.prepare_page(key).status_code == 404
    assert otto.browser.download_page(key).status_code == 404
    assert_prepared_by(key, portal.provider.issuer, ADA)


@pytest.mark.parametrize("channel", ["bearer", "browser"])
def test_an_outsiders_download_gets_the_answer_for_a_key_that_does_not_exist(
    portal: Portal, key: Key, ada: Person, channel: str
):
    _, client = outsider_client(portal, channel)
    expect(ada.api().prepare(key), 200)
    assert expect(client.download(key), 404, "not_found") == client.download(uuid.uuid4()).json()


def test_an_outsiders_api_attempts_are_each_audited(portal: Portal, key: Key, ada: Person, trail: Trail):
    _, client = outsider_client(portal, "bearer")
    expect(ada.api().prepare(key), 200)
    trail.prepared(ADA)
    expect(client.download(key), 404, "not_found")
    trail.refused("download", "permission_denied", OTTO)
    expect(client.prepare(key), 404, "not_found")
    trail.refused("prepare_download", "permission_denied", OTTO)
