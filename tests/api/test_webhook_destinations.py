"""Saving a webhook: URLs that point into the portal's own networks are refused with a 400 on ``url``
that says why (SSRF guard, notifications/egress.py); BYOK_WEBHOOK_ALLOWED_NETWORKS lets an operator
allow on-premises receivers, never the metadata service.
"""

from __future__ import annotations

from typing import Any

import pytest

from notifications.models import Webhook

pytestmark = pytest.mark.django_db


def hooks(keystore: Any) -> str:
    return f"/api/v1/keystores/{keystore.pk}/webhooks/"


@pytest.fixture
def nothing_allowed(settings: Any) -> None:
    """Production's default: no network allowed beyond the public Internet."""
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is the cloud instance metadata service"),
        ("http://[fd00:ec2::254]/latest/", "fd00:ec2::254 is the cloud instance metadata service"),
        ("http://[::ffff:169.254.169.254]/", "(IPv4 169.254.169.254) is the cloud instance metadata service"),
        ("http://[64:ff9b::a9fe:a9fe]/", "(IPv4 169.254.169.254) is the cloud instance metadata service"),
        ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address"),
        ("http://127.8.9.10/", "127.8.9.10 is a loopback address"),
        ("http://[::1]:8000/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1 (IPv4 127.0.0.1) is a loopback address"),
        ("http://[2002:7f00:1::]/", "(IPv4 127.0.0.1) is a loopback address"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is the unspecified address"),
        ("http://[::]/", ":: is the unspecified address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://172.16.0.1/hook", "172.16.0.1 is a private address"),
        ("https://172.31.255.254/hook", "172.31.255.254 is a private address"),
        ("https://192.168.1.20/hook", "192.168.1.20 is a private address"),
        ("https://[fd12:3456::1]/hook", "fd12:3456::1 is a private address"),
        ("https://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("https://169.254.10.10/hook", "169.254.10.10 is a link-local address"),
        ("https://100.64.0.7/hook", "100.64.0.7 is not a public address"),
        ("https://[fec0::1]/hook", "fec0::1 is a site-local address"),
        ("https://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
        ("http://localhost:9000/hook", "localhost resolves to 127.0.0.1, which is a loopback address"),
    ],
)
def test_a_url_into_the_portals_networks_is_refused_with_the_reason(
    api_as: Any, people: Any, keystore: Any, nothing_allowed: None, url: str, says: str
) -> None:
    answer = api_as(people.alice).post(hooks(keystore), {"url": url}, expect=400).json()

    assert list(answer) == ["url"]
    assert says in answer["url"][0]
    assert not Webhook.objects.exists()


def test_a_public_address_and_a_name_that_does_not_resolve_yet_are_accepted(
    api_as: Any, people: Any, keystore: Any, nothing_allowed: None
) -> None:
    api = api_as(people.alice)

    api.post(hooks(keystore), {"url": "https://93.184.215.14/byok"}, expect=201)
    # .invalid never resolves (RFC 2606): every delivery checks the name again when it has addresses.
    api.post(hooks(keystore), {"url": "https://receiver.bank.invalid/byok"}, expect=201)

    assert Webhook.objects.count() == 2


def test_an_allowed_network_takes_on_premises_receivers_and_nothing_next_to_it(
    api_as: Any, people: Any, keystore: Any, settings: Any
) -> None:
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16", "fd00:20::/32"]
    api = api_as(people.alice)

    api.post(hooks(keystore), {"url": "https://10.20.4.5/byok"}, expect=201)
    api.post(hooks(keystore), {"url": "https://[fd00:20::5]/byok"}, expect=201)
    api.post(hooks(keystore), {"url": "https://[::ffff:10.20.4.6]/byok"}, expect=201)
    beside = api.post(hooks(keystore), {"url": "https://10.21.0.1/byok"}, expect=400).json()

    assert "10.21.0.1 is a private address" in beside["url"][0]
    assert "BYOK_WEBHOOK_ALLOWED_NETWORKS" in beside["url"][0]
    assert Webhook.objects.count() == 3


@pytest.mark.parametrize("allowed", [["0.0.0.0/0", "::/0"], ["169.254.0.0/16", "fd00::/8"]])
def test_no_allow_list_opens_the_metadata_service(
    api_as: Any, people: Any, keystore: Any, settings: Any, allowed: list[str]
) -> None:
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = allowed
    api = api_as(people.alice)

    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://169.254.170.2/v2/credentials"):
        answer = api.post(hooks(keystore), {"url": url}, expect=400).json()
        assert "webhooks never go there" in answer["url"][0]
    assert not Webhook.objects.exists()


def test_http_is_refused_unless_the_https_only_setting_is_off(
    api_as: Any, people: Any, keystore: Any, settings: Any
) -> None:
    settings.BYOK_WEBHOOK_ALLOW_HTTP = False
    settings.BYOK_WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16"]

    refused = api_as(people.alice).post(hooks(keystore), {"url": "http://10.20.4.5/byok"}, expect=400).json()

    assert refused == {"url": ["Enter an https:// URL."]}


@pytest.mark.parametrize("value", ["10.0.0.0/33", "hooks.bank.example", "10.0.0.0/8,nonsense"])
def test_a_malformed_allow_list_stops_the_portal_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from byok_portal.env import env_networks

    monkeypatch.setenv("BYOK_WEBHOOK_ALLOWED_NETWORKS", value)

    with pytest.raises(ImproperlyConfigured, match="BYOK_WEBHOOK_ALLOWED_NETWORKS"):
        env_networks("BYOK_WEBHOOK_ALLOWED_NETWORKS", [])
    monkeypatch.setenv("BYOK_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:20::/32,192.0.2.7")
    assert env_networks("BYOK_WEBHOOK_ALLOWED_NETWORKS", []) == ["10.20.0.0/16", "fd00:20::/32", "192.0.2.7"]
