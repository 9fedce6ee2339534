"""Settings for the test suite: production settings with test secrets, never debug mode."""

import base64
import os

os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-" + "t" * 48)
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("BYOK_KEK", base64.b64encode(b"k" * 32).decode())
os.environ.setdefault("BYOK_AUDIT_KEY", "test-audit-key")
os.environ.setdefault("BYOK_TOKEN_KEY", "test-token-key")
os.environ.setdefault("BYOK_SANDBOX", "true")
# Tasks the suite sends without a worker go nowhere; the worker tests bring their own Redis.
# Given through the environment only for the import below: Celery lets CELERY_BROKER_URL
# in the environment override every app's broker, the test clients' included.
_BROKER_FROM_US = "CELERY_BROKER_URL" not in os.environ
os.environ.setdefault("CELERY_BROKER_URL", "memory://")
# The sandbox generates a fresh wrapping key per import, as KMS does; RSA-4096 costs ~0.5 s
# each, so the suite imports with RSA-2048 and one test covers the production default.
os.environ.setdefault("BYOK_IMPORT_WRAPPING_KEY_SPEC", "RSA_2048")
# The sandbox enforces no KMS quotas unless a test turns its quota mode on, so the portal's
# pacing is out of the way (1000 × AWS's rates); the quota tests set their own share.
os.environ.setdefault("BYOK_KMS_QUOTA_SHARE", "1000")
# The suite's webhook receivers listen on 127.0.0.1: allowed as an on-premises receiver would be,
# so deliveries pass the same SSRF guard as in production (tests of the guard empty this list).
# Through the environment, so the worker processes the tests start allow it too (or not: they may override).
os.environ.setdefault("BYOK_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32")

from byok_portal.settings import *  # noqa: E402,F403 - the environment above must come first

if _BROKER_FROM_US:
    del os.environ["CELERY_BROKER_URL"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
CELERY_TASK_ALWAYS_EAGER = False
# The suite's webhook receivers listen on http://127.0.0.1 (production insists on https://).
BYOK_WEBHOOK_ALLOW_HTTP = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
