"""The kernel reaches the unexpected-error recorder through a hand-in, not an upward import."""

from __future__ import annotations

import logging

import pytest
from django.test import RequestFactory

from byok_portal import unexpected
from keys.unexpected import audit_unexpected_error


def test_keys_hands_its_recorder_to_the_kernel_at_start_up() -> None:
    assert unexpected._recorder is audit_unexpected_error


def test_without_a_recorder_the_error_is_logged_and_nothing_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(unexpected, "_recorder", None)
    request = RequestFactory().get("/keys/", HTTP_X_REQUEST_ID="req-42")

    with caplog.at_level(logging.ERROR, logger="byok_portal.unexpected"):
        request_id = unexpected.record_unexpected_error(request, RuntimeError("secret detail"))

    assert request_id == "req-42"
    (entry,) = caplog.records
    assert "RuntimeError" in entry.getMessage()
    assert "no recorder installed" in entry.getMessage()
    assert "secret detail" not in entry.getMessage()
    assert entry.exc_info is not None
