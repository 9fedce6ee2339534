"""After a download the page says so and shows how to unwrap the file (issue 13 item 4).

The OpenSSL commands the pages show are taken from the rendered page and run, as
shown, with this machine's ``openssl`` against a real download: they must unwrap the
file and print the key's KCV.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from keys import services
from keys.models import Key
from tests.keys.helpers import public_pem, rsa_private_key
from tests.web import verified_client

pytestmark = pytest.mark.django_db


def shown_commands(page: str) -> str:
    match = re.search(r'<pre id="unwrap-commands"[^>]*>(.*?)</pre>', page, re.S)
    assert match, "the page shows no unwrap commands"
    return html.unescape(match.group(1))


@pytest.fixture
def prepared(people: Any, keystore: Any) -> Key:
    key = services.key_create(actor=people.actor(people.bob), keystore_id=keystore.pk, name="orders").key
    carol = people.actor(people.carol)
    return services.key_prepare_download(actor=carol, key_id=key.pk, public_key_pem=public_pem()).key


def test_the_commands_on_the_page_unwrap_a_real_download_and_print_its_kcv(
    people: Any, prepared: Key, tmp_path: Path
) -> None:
    assert shutil.which("openssl"), "openssl is part of the machine (Debian's openssl package)"
    bob = verified_client(people.bob)
    commands = shown_commands(bob.get(f"/keys/{prepared.pk}/download/").content.decode())
    response = bob.post(f"/keys/{prepared.pk}/download/")
    assert response.status_code == 200
    filename = f"byok-{prepared.pk}-wrapped.json"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    (tmp_path / filename).write_bytes(response.content)
    (tmp_path / "private.pem").write_bytes(
        rsa_private_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    # The page's own commands, run in a scratch folder.
    result = subprocess.run(
        ["/bin/sh", "-e", "-c", commands], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == prepared.kcv
    assert (tmp_path / "material.bin").stat().st_size == 32


def test_the_key_page_confirms_the_download_and_opens_the_instructions(people: Any, prepared: Key) -> None:
    bob = verified_client(people.bob)
    bob.post(f"/keys/{prepared.pk}/download/")
    page = bob.get(f"/keys/{prepared.pk}/").content.decode()
    assert f"Downloaded byok-{prepared.pk}-wrapped.json. The preparation is used up." in page
    assert re.search(r'<details class="card" id="unwrap"\s+open>', page)
    assert f"byok-{prepared.pk}-wrapped.json" in shown_commands(page)
    # Once read, the confirmation is gone and the instructions fold away.
    assert 'id="unwrap" open' not in bob.get(f"/keys/{prepared.pk}/").content.decode()


def test_the_readme_shows_the_same_commands_as_the_page(people: Any, prepared: Key) -> None:
    from django.conf import settings

    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    block = re.search(r"```sh\n(umask 077\n.*?)```", readme, re.S)
    assert block, "README.md has no unwrap commands"
    page = verified_client(people.bob).get(f"/keys/{prepared.pk}/download/").content.decode()
    assert block.group(1).strip() == shown_commands(page).replace(str(prepared.pk), "<key id>").strip()
