"""``python -m sandbox_aws``: announces its URL once ready, serves AWS calls, exits cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import boto3

from .conftest import BOOTSTRAP_ACCESS_KEY, BOOTSTRAP_SECRET_KEY, NO_RETRIES


def test_cli_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox_aws", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().strip()
        assert banner.startswith("sandbox AWS listening on http://127.0.0.1:")
        url = banner.removeprefix("sandbox AWS listening on ").split(" ", 1)[0]
        kms = boto3.client(
            "kms",
            endpoint_url=url,
            region_name="us-east-1",
            config=NO_RETRIES,
            aws_access_key_id=BOOTSTRAP_ACCESS_KEY,
            aws_secret_access_key=BOOTSTRAP_SECRET_KEY,
        )
        key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]

        params = kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_3072"
        )

        assert params["KeyId"].endswith(key_id)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
