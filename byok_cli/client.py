"""The REST API over httpx: JSON in and out, errors as :class:`~byok_cli.errors.CliError`, pages followed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from byok_cli import __version__
from byok_cli.config import Settings
from byok_cli.errors import PENDING_APPROVAL, UNREACHABLE, CliError, from_response

API = "/api/v1"


class Portal:
    """One portal, authenticated with an API token (``Authorization: Bearer byok_…``)."""

    def __init__(self, settings: Settings) -> None:
        self.http = httpx.Client(
            base_url=settings.url + API,
            headers={
                "Authorization": f"Bearer {settings.token}",
                "Accept": "application/json",
                "User-Agent": f"byok-cli/{__version__}",
            },
            timeout=settings.timeout,
            verify=settings.verify_tls,
        )

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The JSON answer; a 202 (waiting for approval) and every error raise :class:`CliError`."""
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "", ())}
        try:
            response = self.http.request(method, path, json=json, params=clean)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the portal at {self.http.base_url}: {exc}", UNREACHABLE) from exc
        body = _body(response)
        if response.status_code == 202:
            raise CliError(
                "the operation waits for approval: nothing has happened yet (see `byok approval list`)",
                PENDING_APPROVAL,
                body,
            )
        if response.status_code >= 400:
            raise from_response(response.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def pages(self, path: str, *, limit: int | None, **params: Any) -> Iterator[dict[str, Any]]:
        """Every result of a list endpoint, following ``next`` links, at most ``limit``."""
        page = self.get(path, **params)
        count = 0
        while True:
            for item in page.get("results", []):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield item
            following = page.get("next")
            if not following:
                return
            page = self.request("GET", following)

    def stream(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        """A streamed answer (the audit export), chunk by chunk."""
        clean = {k: v for k, v in params.items() if v not in (None, "")}
        try:
            with self.http.stream("GET", path, params=clean) as response:
                if response.status_code >= 400:
                    response.read()
                    raise from_response(response.status_code, _body(response))
                yield from response.iter_bytes()
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the portal at {self.http.base_url}: {exc}", UNREACHABLE) from exc


def _body(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
