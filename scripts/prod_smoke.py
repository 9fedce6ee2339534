"""Production smoke test: the portal as the README's production section deploys it, end to end.

Run with the Python of a virtualenv holding ``requirements.txt`` alone (``make smoke``
builds one); the script itself uses only the standard library and those packages.
It starts, each as its own process and with ``DJANGO_DEBUG=false``:

- the sandbox AWS (STS + KMS) and a real OpenID provider (``tests/oidc_provider/provider.mjs``,
  needs Node.js and ``npm ci``) standing in for AWS and the company's IdP;
- the README's steps: ``migrate``, ``collectstatic``, ``check --deploy``;
- gunicorn with two workers and ``deploy/gunicorn.conf.py``, one Celery worker and *two* Celery
  beats (the mistake the beat lock makes harmless) on Redis, PostgreSQL in a database of its own
  (dropped and created again on every run); web and worker count their metrics into one
  ``PROMETHEUS_MULTIPROC_DIR``, as deploy/'s units do.

Then, through the REST API with a bearer ID token from the provider's authorization code
flow: one key's lifecycle (create keystore, create key, deactivate, activate, schedule
deletion, cancel deletion), checked against the sandbox's KMS after each step, and one
periodic task executed by the worker: beat sends the reconciliation, which finds a key
disabled behind the portal's back and records it (the key's ``kms_state`` and a
``reconcile``/``drift_found`` audit event). Then ``/readyz`` says why it is ready, and
``/metrics``, refused without the token, serves with it the counts of what the run did:
requests, operations, KMS calls, the worker's task outcomes and the audit head. Any failure ends the run with
``PRODUCTION SMOKE TEST FAILED``, the step, the reason and the tail of every process' log.

    python scripts/prod_smoke.py [--redis-url redis://127.0.0.1:6379/13]
        [--database-url postgres://postgres@127.0.0.1:5432/byok_smoke]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HTTP_TIMEOUT = 15
READY_TIMEOUT = 60
RECONCILE_INTERVAL = 3
METRICS_TOKEN = secrets.token_urlsafe(24)
REGION = "eu-west-1"
ACCOUNT = "210987654321"


class SmokeFailure(Exception):
    """A step of the smoke test did not do what production needs."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise SmokeFailure(f"expected JSON, got {self.status}: {self.body[:300]!r}") from exc


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Browser:
    """urllib with cookies, no automatic redirects, and HTTP errors returned instead of raised."""

    cookies: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def request(
        self, method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)
        request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310
        try:
            with opener.open(request, timeout=HTTP_TIMEOUT) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read())


# --- processes ---------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """Every process the smoke test started, stopped (by process group) at the end."""

    workdir: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Service:
        log = self.workdir / f"{name}.log"
        handle = log.open("wb")
        process = subprocess.Popen(  # noqa: S603 - argv built here, no shell
            argv, cwd=ROOT, env=env or self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        service = Service(name, process, log)
        self.services.append(service)
        return service

    def run(self, step: str, argv: list[str]) -> str:
        result = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)  # noqa: S603
        if result.returncode != 0:
            raise SmokeFailure(f"{step}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
        return result.stdout

    def check_alive(self) -> None:
        for service in self.services:
            if service.process.poll() is not None:
                raise SmokeFailure(f"{service.name} exited with {service.process.returncode} (log below)")

    def stop(self) -> None:
        for service in reversed(self.services):
            if service.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGTERM)
        for service in self.services:
            try:
                service.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()

    def dump_logs(self) -> None:
        for service in self.services:
            text = service.log.read_text(errors="replace") if service.log.exists() else ""
            print(f"\n----- {service.name} ({service.log}), last lines -----", file=sys.stderr)
            print("\n".join(text.splitlines()[-40:]), file=sys.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(what: str, probe: Any, *, timeout: float, stack: Stack, interval: float = 0.3) -> Any:
    """Call ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            last = probe()
        except (OSError, SmokeFailure) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise SmokeFailure(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# --- the steps -----------------------------------------------------------------------------


def fresh_database(url: str) -> None:
    import psycopg

    parsed = urllib.parse.urlsplit(url)
    name = parsed.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise SmokeFailure(f"database name {name!r} must be letters, digits and underscores")
    admin = parsed._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise SmokeFailure(f"PostgreSQL at {parsed.hostname}:{parsed.port} is not usable: {exc}") from exc


def fresh_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except redis.RedisError as exc:
        raise SmokeFailure(f"Redis at {url} is not usable: {exc}") from exc


def start_oidc_provider(stack: Stack, redirect_uri: str) -> dict[str, str]:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "oidc-provider").is_dir():
        raise SmokeFailure("the OpenID provider needs Node.js and node_modules: run `npm ci` first")
    client_secret = secrets.token_urlsafe(32)
    config = {
        "client_id": "byok-portal-smoke",
        "client_secret": client_secret,
        "redirect_uris": [redirect_uri],
        "accounts": {"smoke-admin": {"email": "smoke@example.com", "name": "Smoke Admin", "groups": ["kms-creators"]}},
    }
    service = stack.start("oidc-provider", [node, "tests/oidc_provider/provider.mjs", json.dumps(config)])
    # Its first line on stdout is {"issuer": ...}; Node may write warnings to the same log.
    line = wait_for(
        "the OpenID provider",
        lambda: next((x for x in service.log.read_text().splitlines() if x.startswith("{")), ""),
        timeout=20,
        stack=stack,
    )
    issuer = json.loads(line)["issuer"]
    discovery = Browser().request("GET", f"{issuer}/.well-known/openid-configuration").json()
    return {
        "OIDC_RP_CLIENT_ID": "byok-portal-smoke",
        "OIDC_RP_CLIENT_SECRET": client_secret,
        "OIDC_OP_ISSUER": issuer,
        "OIDC_OP_AUTHORIZATION_ENDPOINT": discovery["authorization_endpoint"],
        "OIDC_OP_TOKEN_ENDPOINT": discovery["token_endpoint"],
        "OIDC_OP_USER_ENDPOINT": discovery["userinfo_endpoint"],
        "OIDC_OP_JWKS_ENDPOINT": discovery["jwks_uri"],
        "OIDC_CREATOR_GROUP": "kms-creators",
        "REDIRECT_URI": redirect_uri,
    }


def id_token(oidc: dict[str, str], login: str) -> str:
    """A genuine ID token: the authorization code flow with PKCE, run as the portal's client would."""
    import re
    from html import unescape

    browser = Browser()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode(
        {
            "client_id": oidc["OIDC_RP_CLIENT_ID"],
            "response_type": "code",
            "scope": "openid email profile",
            "redirect_uri": oidc["REDIRECT_URI"],
            "state": secrets.token_urlsafe(16),
            "nonce": secrets.token_urlsafe(16),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    url = f"{oidc['OIDC_OP_AUTHORIZATION_ENDPOINT']}?{query}"
    answer = browser.request("GET", url)
    for _ in range(10):
        if answer.status in (302, 303):
            url = urllib.parse.urljoin(url, answer.headers["Location"])
            if url.startswith(oidc["REDIRECT_URI"]):
                break
            answer = browser.request("GET", url)
            continue
        page = answer.body.decode(errors="replace")
        action = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', page, re.IGNORECASE)
        prompt = re.search(r'name="prompt" value="(\w+)"', page)
        if answer.status != 200 or not action or not prompt:
            raise SmokeFailure(f"the OpenID provider answered {answer.status}: {page[:300]}")
        form = {"prompt": prompt.group(1)} | ({"login": login, "password": "any"} if prompt.group(1) == "login" else {})
        url = urllib.parse.urljoin(url, unescape(action.group(1)))
        answer = browser.request("POST", url, data=urllib.parse.urlencode(form).encode())
    else:
        raise SmokeFailure("the OpenID provider never redirected back with a code")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["code"][0]
    basic = base64.b64encode(f"{oidc['OIDC_RP_CLIENT_ID']}:{oidc['OIDC_RP_CLIENT_SECRET']}".encode()).decode()
    tokens = Browser().request(
        "POST",
        oidc["OIDC_OP_TOKEN_ENDPOINT"],
        data=urllib.parse.urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": oidc["REDIRECT_URI"],
                "code_verifier": verifier,
            }
        ).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    if tokens.status != 200:
        raise SmokeFailure(f"token endpoint answered {tokens.status}: {tokens.body[:300]!r}")
    token: str = tokens.json()["id_token"]
    return token


@dataclass
class Portal:
    """The API as a client behind the TLS proxy sees it."""

    base: str
    token: str = ""

    def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        headers = {"X-Forwarded-Proto": "https", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        answer = Browser().request(method, f"{self.base}{path}", data=data, headers=headers)
        if answer.status != expect:
            raise SmokeFailure(f"{method} {path}: expected {expect}, got {answer.status}: {answer.body[:500]!r}")
        return answer.json() if answer.body else None


def kms_key_state(sandbox_url: str, key: dict[str, Any]) -> str:
    arn = key["kms_key_arn"]
    view = Browser().request("GET", f"{sandbox_url}/_sandbox/kms/{ACCOUNT}/{REGION}/keys/{arn.rsplit('/', 1)[1]}")
    if view.status != 200:
        raise SmokeFailure(f"the sandbox does not know {arn}: {view.status}")
    state: str = view.json()["key_state"]
    return state


def expect_state(portal: Portal, sandbox_url: str, key: dict[str, Any], state: str, kms_state: str) -> None:
    key = portal.call("GET", f"/api/v1/keys/{key['id']}/")
    found = (key["state"], kms_key_state(sandbox_url, key))
    if found != (state, kms_state):
        raise SmokeFailure(f"key {key['id']}: expected (portal, KMS) = {(state, kms_state)}, found {found}")


def as_role(sandbox_url: str, service: str, role_arn: str, external_id: str = "") -> Any:
    """A boto3 client of ``service`` in the sandbox, acting as ``role_arn`` (assumed with ``external_id`` if given)."""
    import boto3

    sts = boto3.client(
        "sts",
        endpoint_url=sandbox_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",  # noqa: S106 - the sandbox's
    )
    assumed = (
        sts.assume_role(RoleArn=role_arn, RoleSessionName="smoke", ExternalId=external_id)
        if external_id
        else sts.assume_role(RoleArn=role_arn, RoleSessionName="smoke")
    )
    creds = assumed["Credentials"]
    client: Any = boto3.client  # one helper for several services; their typed overloads want a literal name
    return client(
        service,
        endpoint_url=sandbox_url,
        region_name=REGION,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def create_role_as_the_customer(sandbox_url: str, keystore: dict[str, Any], policies: dict[str, Any]) -> None:
    """What the IAM guide asks of the customer: create the keystore's role with the two policies the portal shows.

    Done as the account's administrator (the sandbox's ``OrganizationAccountAccessRole``), with
    the documents exactly as the API hands them out, so the smoke test also proves they work.
    """
    administrator = f"arn:aws:iam::{keystore['aws_account_id']}:role/OrganizationAccountAccessRole"
    iam = as_role(sandbox_url, "iam", administrator)
    name = keystore["role_arn"].rsplit("/", 1)[-1]
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(policies["trust_policy"]))
    iam.put_role_policy(
        RoleName=name, PolicyName="byok-portal-permissions", PolicyDocument=json.dumps(policies["permissions_policy"])
    )


def disable_behind_the_portals_back(sandbox_url: str, keystore: dict[str, Any], kms_key_arn: str) -> None:
    kms = as_role(sandbox_url, "kms", keystore["role_arn"], keystore["external_id"])
    kms.disable_key(KeyId=kms_key_arn)


class Steps:
    """Prints each step with its duration; the failure names the step it happened in."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.current = "setup"

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current, began = name, time.monotonic()
        print(f"smoke: {name} ...", flush=True)
        yield
        print(f"smoke: {name}: ok ({time.monotonic() - began:.1f}s)", flush=True)


def smoke(args: argparse.Namespace, stack: Stack, steps: Steps) -> None:
    web_port = free_port()
    metrics_dir = stack.workdir / "metrics"
    metrics_dir.mkdir()
    base = f"http://127.0.0.1:{web_port}"
    with steps.step("PostgreSQL and Redis"):
        fresh_database(args.database_url)
        fresh_redis(args.redis_url)

    with steps.step("sandbox AWS and OpenID provider"):
        sandbox_port = free_port()
        sandbox = stack.start("sandbox-aws", [PYTHON, "-m", "sandbox_aws", "--port", str(sandbox_port)])
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        wait_for("the sandbox AWS", lambda: "listening" in sandbox.log.read_text(), timeout=30, stack=stack)
        oidc = start_oidc_provider(stack, f"{base}/oidc/callback/")

    stack.env.update(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # The portal sits behind a TLS-terminating proxy; the client below says so.
            "BYOK_BEHIND_TLS_PROXY": "true",
            "DATABASE_URL": args.database_url,
            "CELERY_BROKER_URL": args.redis_url,
            "CACHE_URL": args.redis_url,
            "BYOK_KEK": base64.b64encode(os.urandom(32)).decode(),
            "BYOK_AUDIT_KEY": secrets.token_urlsafe(32),
            "BYOK_TOKEN_KEY": secrets.token_urlsafe(32),
            "BYOK_SANDBOX": "true",
            "BYOK_SANDBOX_URL": sandbox_url,
            "BYOK_AWS_PRINCIPAL_ARN": "arn:aws:iam::000000000000:role/byok-portal",
            "BYOK_IMPORT_WRAPPING_KEY_SPEC": "RSA_2048",
            "BYOK_RECONCILE_INTERVAL_SECONDS": str(RECONCILE_INTERVAL),
            "STATIC_ROOT": str(stack.workdir / "static"),
            "BYOK_VAR_DIR": str(stack.workdir / "var"),
            # deploy/byok-portal.env.example's settings for gunicorn, /metrics and beat.
            "BYOK_BIND": f"127.0.0.1:{web_port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "BYOK_METRICS_TOKEN": METRICS_TOKEN,
            "BYOK_BEAT_LOCK_SECONDS": "6",
            **{k: v for k, v in oidc.items() if k != "REDIRECT_URI"},
        }
    )

    with steps.step("the README's steps: migrate, collectstatic, check --deploy"):
        stack.run("migrate", [PYTHON, "manage.py", "migrate", "--noinput"])
        stack.run("collectstatic", [PYTHON, "manage.py", "collectstatic", "--noinput"])
        stack.run("check --deploy", [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"])

    with steps.step("gunicorn (deploy/gunicorn.conf.py, 2 workers), Celery worker, two Celery beats; /readyz"):
        stack.start("gunicorn", [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py")])
        worker = [PYTHON, "-m", "celery", "-A", "byok_portal", "worker", "--concurrency", "2", "--loglevel", "INFO"]
        celery_worker = stack.start("celery-worker", worker)
        beats = [
            stack.start(
                name,
                [PYTHON, "-m", "celery", "-A", "byok_portal", "beat", "-l", "INFO", "-s", str(stack.workdir / name)],
            )
            for name in ("celery-beat", "celery-beat-2")
        ]
        wait_for(
            "/readyz to answer 200",
            lambda: Browser().request("GET", f"{base}/readyz").status == 200,
            timeout=READY_TIMEOUT,
            stack=stack,
        )
        wait_for("the Celery worker", lambda: "ready." in celery_worker.log.read_text(), timeout=30, stack=stack)

    portal = Portal(base)
    with steps.step("pages, static files and 404s with DEBUG off"):
        login_page = Browser().request("GET", f"{base}/accounts/login/", headers={"X-Forwarded-Proto": "https"})
        if login_page.status != 200:
            raise SmokeFailure(f"the login page answered {login_page.status}")
        stylesheet = next((p for p in login_page.body.decode().split('"') if p.startswith("/static/css/")), "")
        served = Browser().request("GET", f"{base}{stylesheet}", headers={"X-Forwarded-Proto": "https"})
        if not stylesheet or served.status != 200:
            raise SmokeFailure(f"the login page's stylesheet {stylesheet!r} is not served")
        missing = Browser().request("GET", f"{base}/no/such/page/", headers={"X-Forwarded-Proto": "https"})
        if missing.status != 404:
            raise SmokeFailure(f"an unknown page answered {missing.status}, not 404")
        if portal.call("GET", "/api/v1/no-such-endpoint/", expect=404)["code"] != "not_found":
            raise SmokeFailure("an unknown API URL did not answer the API's JSON 404")

    with steps.step("bearer ID token from the OpenID provider"):
        portal.token = id_token(oidc, "smoke-admin")
        portal.call("GET", "/api/v1/keystores/")

    with steps.step("lifecycle through the API, checked against KMS"):
        keystore = portal.call(
            "POST",
            "/api/v1/keystores/",
            {
                "name": "Smoke",
                "aws_account_id": ACCOUNT,
                "region": REGION,
                "role_arn": f"arn:aws:iam::{ACCOUNT}:role/byok-portal",
            },
            expect=201,
        )
        refused = portal.call("POST", f"/api/v1/keystores/{keystore['id']}/test-connection/")
        if refused["ok"]:
            raise SmokeFailure("the connection test succeeded before the customer created the role")
        create_role_as_the_customer(
            sandbox_url, keystore, portal.call("GET", f"/api/v1/keystores/{keystore['id']}/iam-policy/")
        )
        connection = portal.call("POST", f"/api/v1/keystores/{keystore['id']}/test-connection/")
        if not connection["ok"]:
            raise SmokeFailure(f"the keystore's connection test failed: {connection['error']}")
        key = portal.call(
            "POST", "/api/v1/keys/", {"keystore": keystore["id"], "name": "orders", "alias": "alias/smoke"}, expect=201
        )
        expect_state(portal, sandbox_url, key, "ACTIVE", "Enabled")
        portal.call("POST", f"/api/v1/keys/{key['id']}/deactivate/")
        expect_state(portal, sandbox_url, key, "INACTIVE", "PendingImport")
        portal.call("POST", f"/api/v1/keys/{key['id']}/activate/")
        expect_state(portal, sandbox_url, key, "ACTIVE", "Enabled")
        portal.call("POST", f"/api/v1/keys/{key['id']}/schedule-deletion/", {"pending_window_days": 7})
        expect_state(portal, sandbox_url, key, "PENDING_DELETION", "PendingDeletion")
        portal.call("POST", f"/api/v1/keys/{key['id']}/cancel-deletion/")
        expect_state(portal, sandbox_url, key, "INACTIVE", "PendingImport")

    with steps.step("periodic task: beat -> worker reconciliation records drift made behind the portal's back"):
        watched = portal.call("POST", "/api/v1/keys/", {"keystore": keystore["id"], "name": "watched"}, expect=201)
        disable_behind_the_portals_back(sandbox_url, keystore, watched["kms_key_arn"])

        def drift_recorded() -> bool:
            seen = portal.call("GET", f"/api/v1/keys/{watched['id']}/")
            return seen["state"] == "ACTIVE" and seen["kms_state"] == "DISABLED"

        wait_for("reconciliation to record the drift", drift_recorded, timeout=45, stack=stack, interval=1)
        events = portal.call("GET", f"/api/v1/audit/events/?key={watched['id']}&operation=reconcile")
        reasons = [(e["operation"], e["reason"], e["actor"]) for e in events["results"]]
        if not any(reason == "drift_found" for _, reason, _ in reasons):
            raise SmokeFailure(f"no reconcile/drift_found audit event for the key; events: {reasons}")

    with steps.step("only one beat sent periodic tasks; the other stood by"):
        sending = [beat.name for beat in beats if "Sending due task" in beat.log.read_text()]
        standing_by = [beat.name for beat in beats if "another beat holds the lock" in beat.log.read_text()]
        if len(sending) != 1 or len(standing_by) != 1 or sending == standing_by:
            raise SmokeFailure(f"beats sending: {sending}, standing by: {standing_by}: expected one of each")

    with steps.step("/readyz names its checks; /metrics is refused without the token, counts the run with it"):
        ready = Browser().request("GET", f"{base}/readyz").json()
        if ready != {"ready": True, "checks": {"database": "ok", "migrations": "ok", "broker": "ok"}}:
            raise SmokeFailure(f"/readyz answered {ready}")
        check_metrics(base)

    with steps.step("audit chain verifies"):
        stack.run("audit_verify", [PYTHON, "manage.py", "audit_verify"])
        stack.check_alive()


def scrape(base: str, **headers: str) -> Answer:
    return Browser().request("GET", f"{base}/metrics", headers={"X-Forwarded-Proto": "https", **headers})


def check_metrics(base: str) -> None:
    """/metrics as Prometheus scrapes it through the proxy: the token, and what the run did counted across processes."""
    from prometheus_client.parser import text_string_to_metric_families

    if (refused := scrape(base)).status != 404:
        raise SmokeFailure(f"/metrics without the token answered {refused.status}, not 404")
    answer = scrape(base, Authorization=f"Bearer {METRICS_TOKEN}")
    if answer.status != 200:
        raise SmokeFailure(f"/metrics with the token answered {answer.status}")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.body.decode())
        for sample in family.samples
    }

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))

    expected = {
        "requests answered (byok_http_request_duration_seconds)": total("byok_http_request_duration_seconds_count"),
        "keys created (byok_operations_total)": total("byok_operations_total", operation="create", outcome="success"),
        "CreateKey calls (byok_kms_calls_total)": total("byok_kms_calls_total", operation="CreateKey"),
        "worker's reconciliations (byok_celery_tasks_total)": total(
            "byok_celery_tasks_total", task="keys.tasks.reconcile_all", outcome="success"
        ),
        "audit head (byok_audit_head_sequence)": total("byok_audit_head_sequence"),
    }
    missing = [what for what, value in expected.items() if value < 1]
    if missing:
        raise SmokeFailure(f"/metrics lacks: {', '.join(missing)}")
    print(f"smoke: /metrics: {', '.join(f'{what} = {value:g}' for what, value in expected.items())}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("SMOKE_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SMOKE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/byok_smoke"),
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs' directory")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="byok-smoke-"))
    # Only what a production host would set: no test settings, no development defaults.
    portal_settings = ("DJANGO_", "BYOK_", "OIDC_", "CELERY_", "AWS_", "DATABASE_", "CACHE_", "SECURE_", "STATIC_")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(portal_settings) and name not in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")
    }
    env |= {"DJANGO_SETTINGS_MODULE": "byok_portal.settings", "PYTHONUNBUFFERED": "1"}
    stack, steps = Stack(workdir, env), Steps()
    ok = False
    try:
        smoke(args, stack, steps)
        ok = True
    except Exception as exc:  # any failure, expected or not, ends in the same loud report
        detail = str(exc) if isinstance(exc, SmokeFailure) else traceback.format_exc()
        print(f"\nPRODUCTION SMOKE TEST FAILED at step {steps.current!r}:\n{detail}", file=sys.stderr)
        stack.dump_logs()
    finally:
        stack.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if ok:
        print(f"PRODUCTION SMOKE TEST PASSED in {time.monotonic() - steps.start:.1f}s")
        return 0
    print(f"logs kept in {workdir}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
