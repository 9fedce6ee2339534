"""Issue 12 item 12 on the pages: the fingerprint shown, a pending preparation kept, and withdrawn."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.messages import get_messages

from audit.models import AuditEvent
from keys import custody, services
from keys.models import Key
from tests.keys.helpers import public_pem
from tests.web import verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(people: Any, keystore: Any) -> Key:
    return services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key


def test_the_pages_show_the_fingerprint_refuse_a_second_preparation_and_withdraw(people: Any, key: Key) -> None:
    bob, carol = verified_client(people.bob), verified_client(people.carol)
    fingerprint = custody.public_key_fingerprint(public_pem(2048))
    prepared = bob.post(f"/keys/{key.pk}/prepare-download/", {"public_key": public_pem(2048)})
    assert prepared.status_code == 302
    assert fingerprint in [str(m) for m in get_messages(prepared.wsgi_request)][-1]

    page = carol.get(f"/keys/{key.pk}/").content.decode()
    assert fingerprint in page
    assert 'id="dialog-withdraw-download"' not in page  # carol neither prepared it nor is an admin
    assert fingerprint in carol.get(f"/keys/{key.pk}/download/").content.decode()
    assert fingerprint in carol.get(f"/keys/{key.pk}/prepare-download/").content.decode()

    carol.post(f"/keys/{key.pk}/prepare-download/", {"public_key": public_pem(3072)})
    key.refresh_from_db()
    assert custody.public_key_fingerprint(key.download_public_key) == fingerprint  # not replaced

    assert 'id="dialog-withdraw-download"' in bob.get(f"/keys/{key.pk}/").content.decode()
    response = bob.post(f"/keys/{key.pk}/withdraw-download/")
    assert response.status_code == 302
    assert "withdrawn" in [str(m) for m in get_messages(response.wsgi_request)][-1]
    key.refresh_from_db()
    assert not key.download_prepared
    assert AuditEvent.objects.filter(operation="withdraw_download", outcome="success").count() == 1

    carol.post(f"/keys/{key.pk}/prepare-download/", {"public_key": public_pem(3072)})
    download = bob.post(f"/keys/{key.pk}/download/")
    assert json.loads(download.content)["public_key_fingerprint"] == custody.public_key_fingerprint(public_pem(3072))
