"""The CLI keeps up with the API and with the portal's custody, without a live portal.

- every key and keystore action of the OpenAPI schema has a ``byok`` command (a new
  operation in the registry fails here until the CLI gets it);
- ``byok``'s local unwrapping opens what the portal's custody wraps, for every key spec
  family, and computes the same check values (a second, independent implementation: the
  CLI imports nothing of the portal).
"""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path

import pytest

from byok_cli import unwrap
from byok_cli.main import approval, key, keystore
from keys import custody
from tests.api.conftest import openapi
from tests.keys.helpers import public_pem, rsa_private_key

CLI_SOURCE = Path(unwrap.__file__).parent


def test_every_key_and_keystore_action_of_the_api_has_a_command() -> None:
    key_actions, keystore_actions = set(), set()
    for path in openapi()["paths"]:
        if found := re.fullmatch(r"/api/v1/keys/\{id\}/([a-z-]+)/", path):
            key_actions.add(found.group(1))
        if found := re.fullmatch(r"/api/v1/keystores/\{id\}/([a-z-]+)/", path):
            keystore_actions.add(found.group(1))
    assert {"deactivate", "download", "prepare-download"} <= key_actions
    assert key_actions - set(key.commands) == set()
    # Named for people: `byok keystore test` runs test-connection.
    commands = {"test-connection": "test"}
    assert {"test-connection", "iam-policy"} <= keystore_actions
    assert {commands.get(action, action) for action in keystore_actions} - set(keystore.commands) == set()
    # SPEC §16's approval actions (another branch builds the endpoints).
    assert {"list", "show", "approve", "reject", "cancel"} <= set(approval.commands)


def test_the_cli_imports_nothing_of_the_portal() -> None:
    portal_packages = {"accounts", "audit", "byok_portal", "keys", "keystores", "tokens", "django", "rest_framework"}
    for source in CLI_SOURCE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {name.split(".")[0] for name in names} & portal_packages, source.name


@pytest.mark.parametrize("key_spec", ["SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_512", "RSA_2048", "ECC_NIST_P256"])
def test_the_cli_opens_what_the_portal_wraps_and_agrees_on_the_check_value(key_spec: str) -> None:
    material = custody.generate_software_material(key_spec)
    expected = custody.check_values(key_spec, material)
    download = {
        "key_spec": key_spec,
        "wrapping_algorithm": custody.download_wrapping_algorithm(key_spec),
        "wrapped_key_material": base64.b64encode(custody.wrap_for_download(material, public_pem(), key_spec)).decode(),
        "kcv": expected.kcv or None,
        "public_key_sha256": expected.public_key_sha256 or None,
    }
    opened = unwrap.open_download(download, rsa_private_key())
    assert opened.ok
    assert opened.current.material == bytes(material)
    assert opened.current.check_value == (expected.kcv or expected.public_key_sha256)
    assert unwrap.fingerprint(rsa_private_key()) == custody.public_key_fingerprint(public_pem())
    # A check value that does not match is reported as such.
    tampered = {**download, "kcv": "000000", "public_key_sha256": "0" * 64}
    assert not unwrap.open_download(tampered, rsa_private_key()).ok


def test_each_version_of_a_multi_material_download_is_checked() -> None:
    """SPEC §16: a download may list every material version; each is unwrapped and checked."""
    versions = [custody.generate_software_material() for _ in range(2)]

    def wrapped(material: bytearray) -> str:
        return base64.b64encode(custody.wrap_for_download(material, public_pem())).decode()

    download = {
        "key_spec": "SYMMETRIC_DEFAULT",
        "wrapping_algorithm": "RSAES_OAEP_SHA_256",
        "wrapped_key_material": wrapped(versions[1]),
        "kcv": custody.kcv(versions[1]),
        "materials": [
            {"version": 1, "kcv": custody.kcv(versions[0]), "wrapped_key_material": wrapped(versions[0])},
            {"version": 2, "kcv": "ABCDEF", "wrapped_key_material": wrapped(versions[1])},
        ],
    }
    opened = unwrap.open_download(download, rsa_private_key())
    assert [(v, c.ok) for v, c in opened.versions] == [(1, True), (2, False)]
    assert not opened.ok
