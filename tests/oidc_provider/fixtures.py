"""A real OpenID provider for the test suite, and helpers that log in through it.

``oidc_provider`` (session-scoped) starts ``provider.mjs`` (panva/oidc-provider,
pinned by the repository's package-lock.json) with node, on 127.0.0.1 and a free
port, registered with the live server's ``/oidc/callback/``. ``oidc_settings``
points the portal at it for one test. tests/conftest.py loads this module as a plugin,
so every test may ask for them; importing them into a conftest would start a second
provider (a fixture per module that defines it).

Without node or node_modules the fixture skips, saying why (under CI=true a skip
fails the run, see tests/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("provider.mjs")
STARTUP_SECONDS = 20
HTTP_TIMEOUT = 10

_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)
_PROMPT = re.compile(r'name="prompt" value="(\w+)"')


@dataclass
class OIDCProvider:
    """A running provider: its issuer, endpoints, the registered client, and test helpers."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    discovery: dict[str, Any] = field(default_factory=dict)

    @property
    def jwks(self) -> dict[str, Any]:
        response = requests.get(self.discovery["jwks_uri"], timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        jwks: dict[str, Any] = response.json()
        return jwks

    def settings(self) -> dict[str, Any]:
        """Django settings that point the portal at this provider."""
        d = self.discovery
        return {
            "OIDC_ENABLED": True,
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_OP_ISSUER": self.issuer,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": d["authorization_endpoint"],
            "OIDC_OP_TOKEN_ENDPOINT": d["token_endpoint"],
            "OIDC_OP_USER_ENDPOINT": d["userinfo_endpoint"],
            "OIDC_OP_JWKS_ENDPOINT": d["jwks_uri"],
            "OIDC_OP_LOGOUT_ENDPOINT": d["end_session_endpoint"],
        }

    def set_claims(self, sub: str, **claims: Any) -> None:
        """Change what the provider says about an account (e.g. a new email) from now on."""
        response = requests.post(f"{self.issuer}/test/accounts/{sub}", json=claims, timeout=HTTP_TIMEOUT)
        response.raise_for_status()

    def mint(self, claims: dict[str, Any], *, header: dict[str, Any] | None = None, unset: tuple[str, ...] = ()) -> str:
        """An ID token signed with the provider's own key (defaults: iss, aud, iat, exp in 10 minutes)."""
        body: dict[str, Any] = {"claims": claims, "header": header or {}, "unset": list(unset)}
        response = requests.post(f"{self.issuer}/test/mint", json=body, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def _complete_interactions(self, http: requests.Session, response: requests.Response, login: str) -> str:
        """Submit the provider's login and consent forms until it redirects to the client's callback.

        Returns that callback URL (not followed).
        """
        for _ in range(10):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if location.startswith(self.redirect_uri):
                    return location
                response = http.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT)
                continue
            assert response.status_code == 200, f"provider answered {response.status_code}: {response.text[:500]}"
            action = _FORM_ACTION.search(response.text)
            prompt = _PROMPT.search(response.text)
            assert action, f"no interaction form in: {response.text[:500]}"
            assert prompt, f"no interaction prompt in: {response.text[:500]}"
            data = {"prompt": prompt.group(1)}
            if data["prompt"] == "login":
                data |= {"login": login, "password": "any"}
            response = http.post(
                urljoin(response.url, unescape(action.group(1))), data=data, allow_redirects=False, timeout=HTTP_TIMEOUT
            )
        raise AssertionError("the provider never redirected back to the client")

    def browser_login(
        self, portal_url: str, login: str, *, next_path: str = "/accounts/", http: requests.Session | None = None
    ) -> requests.Session:
        """The full authorization code flow, browser-style, through the portal: returns the logged-in session.

        The portal starts the flow (state, nonce, PKCE), the provider's login and
        consent forms are submitted for ``login`` (which becomes the ``sub``), and the
        callback is followed back into the portal. Pass ``http`` to log in within an
        existing browser (its provider cookies are dropped, so the provider asks again).
        """
        if http is None:
            http = requests.Session()
        else:
            http.cookies.clear(domain=urlparse(self.issuer).hostname or "")
        start = http.get(
            f"{portal_url}/oidc/authenticate/", params={"next": next_path}, allow_redirects=False, timeout=HTTP_TIMEOUT
        )
        assert start.status_code == 302, start.text[:500]
        authorize = http.get(start.headers["Location"], allow_redirects=False, timeout=HTTP_TIMEOUT)
        callback = self._complete_interactions(http, authorize, login)
        final = http.get(callback, allow_redirects=True, timeout=HTTP_TIMEOUT)
        assert final.status_code == 200, f"{final.url}: {final.status_code} {final.text[:500]}"
        assert urlparse(final.url).path == next_path, f"login ended at {final.url}"
        return http

    def code_flow_id_token(self, login: str) -> str:
        """A genuine ID token for ``login``, by running the code flow (PKCE) as the client itself."""
        http = requests.Session()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "scope": "openid email profile",
            "redirect_uri": self.redirect_uri,
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        authorize = http.get(
            self.discovery["authorization_endpoint"], params=params, allow_redirects=False, timeout=HTTP_TIMEOUT
        )
        callback = self._complete_interactions(http, authorize, login)
        code = parse_qs(urlparse(callback).query)["code"][0]
        response = requests.post(
            self.discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
            },
            auth=(self.client_id, self.client_secret),
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()
        token: str = response.json()["id_token"]
        return token


def _start(redirect_uri: str, post_logout_uri: str) -> Iterator[OIDCProvider]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("the OpenID provider tests need Node.js (`node` is not on PATH)")
    if not (ROOT / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("the OpenID provider tests need node_modules/oidc-provider: run `npm ci` (or `make test`)")
    client_id, client_secret = "byok-portal-test", secrets.token_urlsafe(32)
    config: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": [redirect_uri],
        "post_logout_redirect_uris": [post_logout_uri],
        "accounts": {},
    }
    process = subprocess.Popen(
        [node, str(SCRIPT), json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"the OpenID provider did not start: {stderr[-2000:]}")
        issuer = json.loads(line)["issuer"]
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).json()
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield OIDCProvider(
            issuer=issuer,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            discovery=discovery,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def oidc_provider(live_server: Any) -> Iterator[OIDCProvider]:
    """A real OpenID provider process for the whole session, with the live server as its client."""
    yield from _start(f"{live_server.url}/oidc/callback/", f"{live_server.url}/accounts/login/")


@pytest.fixture
def oidc_settings(oidc_provider: OIDCProvider, settings: Any) -> OIDCProvider:
    """Point the portal at the provider for one test (over plain HTTP, so cookies are not Secure-only)."""
    for name, value in oidc_provider.settings().items():
        setattr(settings, name, value)
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    return oidc_provider
