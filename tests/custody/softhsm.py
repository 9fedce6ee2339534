"""A SoftHSM2 token for the tests' ``BYOK_CUSTODY=pkcs11`` runs (SPEC §13).

``.ci/run`` initialises a token in a temporary directory and exports ``SOFTHSM2_CONF``
with ``BYOK_TEST_PKCS11_TOKEN_LABEL``/``BYOK_TEST_PKCS11_PIN``; without those (``make
test`` on a developer machine) the session initialises its own token under pytest's
temporary directory. SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the module is first
initialised, so one token serves the whole session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MODULE = os.environ.get("BYOK_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
# One KEK per pytest-xdist worker: the workers share CI's token, and two workers creating the
# same label at once would leave two KEKs the backend cannot tell apart.
KEK_LABEL = f"byok-test-kek{os.environ.get('PYTEST_XDIST_WORKER', '')}"
BACKENDS = ("software", "pkcs11")


@dataclass(frozen=True)
class SoftHsmToken:
    """Where the session's token is and how to log in."""

    module: str
    label: str
    pin: str


def init_token(directory: Path, label: str) -> SoftHsmToken:
    """A fresh token in ``directory`` (and SOFTHSM2_CONF pointing at it), as the README's setup does."""
    util = shutil.which("softhsm2-util")
    if util is None or not Path(MODULE).exists():
        raise RuntimeError("BYOK_CUSTODY=pkcs11 tests and benchmarks need SoftHSM2: apt-get install softhsm2")
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(8)
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", secrets.token_hex(8)],
        check=True,
        capture_output=True,
    )
    return SoftHsmToken(MODULE, label, pin)


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> SoftHsmToken:
    label = os.environ.get("BYOK_TEST_PKCS11_TOKEN_LABEL", "")
    if label and os.environ.get("SOFTHSM2_CONF"):
        return SoftHsmToken(MODULE, label, os.environ["BYOK_TEST_PKCS11_PIN"])
    return init_token(tmp_path_factory.mktemp("softhsm"), "byok-test")


def pkcs11_environment(token: SoftHsmToken, kek_label: str = KEK_LABEL) -> dict[str, str]:
    """The settings of :func:`use_pkcs11` as environment variables (for a process of its own: the benchmark)."""
    return {
        "BYOK_CUSTODY": "pkcs11",
        "BYOK_PKCS11_MODULE": token.module,
        "BYOK_PKCS11_TOKEN_LABEL": token.label,
        "BYOK_PKCS11_PIN": token.pin,
        "BYOK_PKCS11_KEK_LABEL": kek_label,
        "BYOK_PKCS11_OAEP_HASH": "SHA1",
    }


def use_pkcs11(settings: Any, token: SoftHsmToken, kek_label: str = KEK_LABEL) -> None:
    """Switch the portal to the token (the KEK is created on first use, as `byok_custody init` does)."""
    from keys import hsm

    settings.BYOK_CUSTODY = "pkcs11"
    settings.BYOK_PKCS11_MODULE = token.module
    settings.BYOK_PKCS11_TOKEN_LABEL = token.label
    settings.BYOK_PKCS11_PIN = token.pin
    settings.BYOK_PKCS11_PIN_FILE = ""
    settings.BYOK_PKCS11_KEK_LABEL = kek_label
    # SoftHSM2 2.6's CKM_RSA_PKCS_OAEP takes SHA-1 only (`byok_custody status` shows it); KMS accepts RSAES_OAEP_SHA_1.
    settings.BYOK_PKCS11_OAEP_HASH = "SHA1"
    hsm.init_kek()


@pytest.fixture
def pkcs11_custody(softhsm_token: SoftHsmToken, settings: Any) -> SoftHsmToken:
    """The portal on BYOK_CUSTODY=pkcs11 with the session's SoftHSM2 token."""
    use_pkcs11(settings, softhsm_token)
    return softhsm_token


def select_backend(request: pytest.FixtureRequest, settings: Any, backend: str) -> str:
    """Put the portal on ``backend`` for this test (the session's SoftHSM2 token for ``pkcs11``)."""
    if backend == "pkcs11":
        use_pkcs11(settings, request.getfixturevalue("softhsm_token"))
    else:
        settings.BYOK_CUSTODY = "software"
    return backend


@pytest.fixture
def custody_backend(request: pytest.FixtureRequest, settings: Any) -> str:
    """Parametrise with ``indirect=["custody_backend"]``: the backend the test runs on (default software)."""
    return select_backend(request, settings, str(getattr(request, "param", "software")))
