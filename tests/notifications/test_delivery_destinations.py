"""Every delivery checks where it goes after resolving the name, and connects to the address it checked.

The receivers are real HTTP servers on 127.0.0.1 and ``localhost`` is resolved by the
system's resolver; only the rebinding tests script a resolver's answers (for names that
do not exist), because no real DNS server here changes its mind on demand.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from notifications import services
from notifications.models import Delivery, DeliveryState
from tests.tasks.test_webhooks import Receiver

pytestmark = pytest.mark.django_db

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, list[list[str]]], list[str]]:
    """``dns(name, [answer, answer, ...])``: the resolver answers ``name`` with each answer in turn (the last
    one from then on); other names resolve as usual. Returns the log of lookups of ``name``."""
    scripted: dict[str, list[list[str]]] = {}
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in scripted:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        asked.append(host)
        answers = scripted[host]
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0)))
            for a in addresses
        ]

    def script(name: str, answers: list[list[str]]) -> list[str]:
        scripted[name] = answers
        return asked

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return script


def webhook_to(people: Any, keystore: Any, url: str, settings: Any, allowed: list[str]) -> Delivery:
    """A webhook saved while ``allowed`` was the allow-list, and a test delivery queued for it."""
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = allowed
    alice = people.actor(people.alice)
    created = services.webhook_create(actor=alice, keystore_id=keystore.pk, url=url, events=[])
    return services.webhook_send_test(actor=alice, keystore_id=keystore.pk, webhook_id=created.webhook.pk)


def test_a_delivery_to_an_allowed_receiver_goes_through(
    people: Any, keystore: Any, receiver: Receiver, settings: Any
) -> None:
    delivery = webhook_to(people, keystore, receiver.url, settings, ["127.0.0.1/32"])

    assert services.attempt_delivery(delivery.pk) is None

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code, len(receiver.requests)) == (DeliveryState.DELIVERED, 200, 1)


def test_a_name_that_now_resolves_into_a_refused_network_is_not_contacted_and_not_retried(
    people: Any, keystore: Any, receiver: Receiver, settings: Any
) -> None:
    # Saved while loopback was allowed; the operator has since emptied the allow-list.
    url = receiver.url.replace("127.0.0.1", "localhost")
    delivery = webhook_to(people, keystore, url, settings, ["127.0.0.0/8", "::1/128"])
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = []

    assert services.attempt_delivery(delivery.pk) is None, "a refused destination is not retried"

    delivery.refresh_from_db()
    (attempt,) = delivery.attempt_log.all()
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == (DeliveryState.FAILED, 1, None)
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused: localhost resolves to 127.0.0.1, which is a loopback address")
    assert receiver.requests == []
    assert services.attempt_delivery(delivery.pk) is None
    assert Delivery.objects.get(pk=delivery.pk).attempts == 1


def test_dns_rebinding_cannot_move_the_request_after_the_check(
    people: Any, keystore: Any, receiver: Receiver, settings: Any, dns: Any
) -> None:
    """The name answers the allowed receiver (when saving, and at the delivery's check), then an address nobody
    may reach: the POST still goes to the address checked, with the name in the Host header."""
    port = receiver.url.split(":")[2].split("/")[0]
    asked = dns("hooks.bank.test", [["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"]])
    delivery = webhook_to(people, keystore, f"http://hooks.bank.test:{port}/byok-events", settings, ["127.0.0.1/32"])
    asked.clear()  # the lookup when saving

    services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code) == (DeliveryState.DELIVERED, 200)
    (request,) = receiver.requests
    assert request.headers["Host"] == f"hooks.bank.test:{port}"
    assert asked == ["hooks.bank.test"], "one lookup per attempt: the connection reuses the checked address"


def test_every_address_of_the_name_must_pass(
    people: Any, keystore: Any, receiver: Receiver, settings: Any, dns: Any
) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    dns("mixed.bank.test", [["127.0.0.1"], ["127.0.0.1", "169.254.169.254"]])
    delivery = webhook_to(people, keystore, f"http://mixed.bank.test:{port}/", settings, ["127.0.0.1/32"])

    services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.FAILED
    assert "mixed.bank.test resolves to 169.254.169.254, which is the cloud instance metadata service" in (
        delivery.attempt_log.get().error
    )
    assert receiver.requests == []


def test_a_name_without_addresses_is_tried_again_later(people: Any, keystore: Any, settings: Any, dns: Any) -> None:
    delivery = webhook_to(people, keystore, "https://receiver.bank.invalid/byok", settings, [])

    delay = services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert delay is not None
    assert delivery.state == DeliveryState.PENDING
    assert delivery.attempt_log.get().error.startswith("DNS: receiver.bank.invalid could not be resolved")


def test_a_redirect_is_an_answer_not_a_second_destination(
    people: Any, keystore: Any, receiver: Receiver, settings: Any
) -> None:
    receiver.statuses = [302]
    receiver.location = receiver.url + "/followed"
    delivery = webhook_to(people, keystore, receiver.url, settings, ["127.0.0.1/32"])

    services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code) == (DeliveryState.PENDING, 302)
    assert [r.headers.get("Host") for r in receiver.requests] == [receiver.url.split("/")[2]]


def _certificate_authority(tmp_path: Path, server_name: str) -> tuple[Path, Path, Path]:
    """A CA (its PEM file) and a server certificate for ``server_name`` signed by it (cert and key files)."""
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test bank CA"))
        .issuer_name(name("Test bank CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(name(server_name))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[Callable[[str], tuple[int, list[str]]]]:
    """``tls_receiver(name)`` → (port, SNI names seen): HTTPS on 127.0.0.1 with a certificate for ``name``,
    issued by a CA that SSL_CERT_FILE names (as an on-premises receiver's in-house CA would be)."""
    servers: list[ThreadingHTTPServer] = []

    def start(server_name: str) -> tuple[int, list[str]]:
        ca_file, cert_file, key_file = _certificate_authority(tmp_path, server_name)
        os.environ["SSL_CERT_FILE"] = str(ca_file)
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)

        def remember(sock: Any, sni: str | None, ctx: ssl.SSLContext) -> None:
            seen.append(sni or "")

        context.sni_callback = remember
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], seen

    previous = os.environ.get("SSL_CERT_FILE")
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    if previous is None:
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = previous


def test_over_https_the_checked_address_is_reached_with_the_name_for_sni_and_the_certificate(
    people: Any, keystore: Any, settings: Any, dns: Any, tls_receiver: Any
) -> None:
    port, seen = tls_receiver("hooks.bank.test")
    dns("hooks.bank.test", [["127.0.0.1"]])
    delivery = webhook_to(people, keystore, f"https://hooks.bank.test:{port}/byok", settings, ["127.0.0.1/32"])

    services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code) == (DeliveryState.DELIVERED, 204)
    assert seen == ["hooks.bank.test"]


def test_over_https_a_certificate_for_another_name_is_refused(
    people: Any, keystore: Any, settings: Any, dns: Any, tls_receiver: Any
) -> None:
    """Connecting to an IP must not weaken TLS: the certificate is checked against the URL's name."""
    port, _seen = tls_receiver("someone-else.test")
    dns("hooks.bank.test", [["127.0.0.1"]])
    delivery = webhook_to(people, keystore, f"https://hooks.bank.test:{port}/byok", settings, ["127.0.0.1/32"])

    services.attempt_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.last_status_code) == (DeliveryState.PENDING, None)
    assert delivery.attempt_log.get().error == "ConnectError: request failed"
