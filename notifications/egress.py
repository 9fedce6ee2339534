"""Where webhooks may send to: the guard against server-side request forgery (SSRF).

A webhook URL is an address the portal's own network will POST to, with the worker's
network position: without a guard, a keystore admin could aim it at the instance
metadata service (the portal's AWS credentials, which manage customers' KMS keys), at
the database, Redis or anything else behind the firewall. So an address may receive
webhooks only if it is public — or inside a network an operator allows explicitly
with ``BYOK_WEBHOOK_ALLOWED_NETWORKS`` (on-premises receivers). Cloud metadata and
"unspecified" addresses are refused even then.

The rule is applied twice, by the same functions: when a webhook is saved (a clear 400
on the ``url`` field) and at every delivery, after resolving the name, because DNS can
answer differently later (DNS rebinding). At delivery every resolved address must pass,
and the connection goes to the address that was checked — the request is sent to that
IP, with the name kept for the ``Host`` header, TLS SNI and certificate verification —
so no second lookup can move it elsewhere. Redirects are never followed.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

import httpx
from django.conf import settings

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never a webhook receiver, whatever the allow-list says: credentials live there, or "this host".
_NEVER: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        ("169.254.169.254/32", "the cloud instance metadata service"),
        ("fd00:ec2::254/128", "the cloud instance metadata service"),
        ("169.254.170.2/32", "the container credentials service"),
        ("169.254.170.23/32", "the container credentials service"),
        ("fd00:ec2::23/128", "the container credentials service"),
        ("0.0.0.0/32", "the unspecified address (this host)"),
        ("::/128", "the unspecified address (this host)"),
    )
)
# IPv6 prefixes that carry an IPv4 address a gateway will reach for us (checked as that IPv4 address).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class DestinationRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach; ``reason`` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DestinationUnresolved(Exception):
    """The URL's host name has no address now (DNS failed or answered nothing): worth trying again later."""


@dataclass(frozen=True)
class Destination:
    """A webhook URL and the checked address its request must be sent to."""

    url: str
    host: str  # the name (or literal address) in the URL
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with the checked address in place of the name: no second lookup happens."""
        return httpx.URL(self.url).copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        return httpx.URL(self.url).netloc.decode("ascii")


def allowed_networks() -> list[IPNetwork]:
    """``BYOK_WEBHOOK_ALLOWED_NETWORKS`` as networks (the settings reader has checked each CIDR)."""
    return [ipaddress.ip_network(network, strict=False) for network in settings.BYOK_WEBHOOK_ALLOWED_NETWORKS]


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or 1 < int(address) < 2**32:  # NAT64 well-known prefix; deprecated ::a.b.c.d
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _kind(address: IPAddress) -> str | None:
    """What makes ``address`` non-public, in words; None for a public address."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def refusal(address: IPAddress, *, name: str = "") -> str | None:
    """Why webhooks may not go to ``address`` (one sentence, naming ``name`` if it resolved to it), or None."""
    embedded = _embedded_ipv4(address)
    # The IPv4 address a gateway would reach first: its kind says more than the IPv6 wrapper's.
    seen = [address] if embedded is None else [embedded, address]
    named = str(address) if embedded is None else f"{address} (IPv4 {embedded})"
    subject = f"{name} resolves to {named}, which" if name else named
    for candidate in seen:
        for network, why in _NEVER:
            if candidate in network:
                return f"{subject} is {why}; webhooks never go there."
    networks = allowed_networks()
    if any(candidate in network for candidate in seen for network in networks if candidate.version == network.version):
        return None
    for candidate in seen:
        kind = _kind(candidate)
        if kind is not None:
            return (
                f"{subject} is {kind}; webhooks go to public addresses only "
                "(an operator can allow a network with BYOK_WEBHOOK_ALLOWED_NETWORKS)."
            )
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now, in the resolver's order (duplicates dropped)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DestinationUnresolved(f"{host} could not be resolved ({exc.__class__.__name__}).") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnresolved(f"{host} has no address.")
    return addresses


def _host_and_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise DestinationRefused("The URL names no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused("The URL's port is not a number from 1 to 65535.") from exc
    return host, port


def _scheme_refusal(url: str) -> str | None:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and settings.BYOK_WEBHOOK_ALLOW_HTTP):
        return None
    return "Enter an http(s):// URL." if settings.BYOK_WEBHOOK_ALLOW_HTTP else "Enter an https:// URL."


def destination(url: str) -> Destination:
    """The checked address to deliver ``url`` to, resolved now; every address the name has must pass.

    Raises :class:`DestinationRefused` (never to be retried) or :class:`DestinationUnresolved`.
    """
    scheme = _scheme_refusal(url)
    if scheme is not None:
        raise DestinationRefused(scheme)
    host, port = _host_and_port(url)
    literal = _literal(host)
    addresses = [literal] if literal is not None else resolve(host, port)
    for address in addresses:
        why = refusal(address, name="" if literal is not None else host)
        if why is not None:
            raise DestinationRefused(why)
    return Destination(url=url, host=host, address=addresses[0])


def check_for_saving(url: str) -> str | None:
    """Why ``url`` may not be saved as a webhook, or None.

    A literal address is judged as it is; a name is resolved (for at most the webhook
    timeout) and judged by its addresses. A name that does not resolve yet is accepted:
    the receiver may not exist yet, and every delivery checks again anyway.
    """
    try:
        host, port = _host_and_port(url)
        literal = _literal(host)
        if literal is not None:
            return refusal(literal)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            addresses = pool.submit(resolve, host, port).result(timeout=settings.BYOK_WEBHOOK_TIMEOUT_SECONDS)
        except (DestinationUnresolved, concurrent.futures.TimeoutError):
            return None
        finally:
            pool.shutdown(wait=False)
        for address in addresses:
            why = refusal(address, name=host)
            if why is not None:
                return why
    except DestinationRefused as exc:
        return exc.reason
    return None


def post(target: Destination, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    """POST ``body`` to the checked address of ``target``; redirects are answers, never followed."""
    extensions = {} if _literal(target.host) is not None else {"sni_hostname": target.host}
    # The CA bundle may come from SSL_CERT_FILE/SSL_CERT_DIR (an in-house CA); proxies from the
    # environment may not: a proxy would do its own lookup of the name, past this guard.
    tls = httpx.create_ssl_context(trust_env=True)
    with httpx.Client(verify=tls, trust_env=False, follow_redirects=False, timeout=timeout) as client:
        request = client.build_request(
            "POST",
            target.pinned_url,
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions=extensions,
        )
        return client.send(request)
