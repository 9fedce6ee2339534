"""Django settings for BYOK Portal, read from the environment (SPEC §8).

Defaults are the embedded development setup (SQLite, the sandbox AWS, Celery on a
filesystem broker) so that a checkout runs with ``make run``. Outside debug mode
every production value must be given explicitly; a missing one fails at start.
"""

from __future__ import annotations

import json
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from byok_portal.env import env_bool, env_float, env_int, env_list, env_networks, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("BYOK_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)

_missing: list[str] = []


def _required(name: str, debug_default: str) -> str:
    """A production value: optional while debugging, mandatory otherwise."""
    value = env_str(name)
    if value:
        return value
    if DEBUG:
        return debug_default
    _missing.append(name)
    return ""


SECRET_KEY = _required("DJANGO_SECRET_KEY", "insecure-development-key-" + "x" * 40)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    _missing.append("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "mozilla_django_oidc",
    "django_celery_beat",
    "byok_portal.apps.PortalConfig",
    "accounts",
    "keystores",
    "keys",
    "audit",
    "approvals",
    "tokens",
    "notifications",
    "reports",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Early, so that a database outage anywhere below answers 503 with Retry-After.
    "byok_portal.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Request latency for /metrics (SPEC §14): after everything that may answer early but the handlers.
    "byok_portal.metrics.RequestLatencyMiddleware",
    # Audits an exception that escapes a page view (the API's handler does the same for the API).
    "byok_portal.unexpected.UnexpectedErrorMiddleware",
    # Last, as django-axes requires: it inspects the response of the login views.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "byok_portal.urls"
WSGI_APPLICATION = "byok_portal.wsgi.application"
AUTH_USER_MODEL = "accounts.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Security -----------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe the processes directly over plain HTTP (byok_portal/health.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BYOK_BEHIND_TLS_PROXY", False) else None
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The header only makes the site eligible; submitting it to browsers' preload list is the operator's choice.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts and styles only from the portal's own static files, so an
# injected <script>, on* handler or style attribute does not run. Pages therefore carry no inline script or
# style (tests/pages/test_csp.py renders every page to hold that). img-src allows data: for the CSS icons of
# the API docs (Swagger UI). form-action is left open on purpose: the OIDC login and logout redirect to the
# identity provider's origin after a form post, which form-action 'self' would block.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
    }
}

# --- Authentication -----------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # django-axes first, so a locked-out client is refused before a password check.
    "axes.backends.AxesStandaloneBackend",
    "accounts.oidc.PortalOIDCBackend",
    "django.contrib.auth.backends.ModelBackend",
]
BYOK_LOCAL_LOGIN = env_bool("BYOK_LOCAL_LOGIN", True)
# django-axes counts failed local logins (passwords and TOTP codes) in the database,
# so every web process sees the same counts. It locks one (account, client address)
# pair, never an account for everyone (anyone could lock `admin` out) nor an address
# for every account. OIDC logins are not counted at all: the provider guards its own
# passwords, and a failed callback must not block the next valid one (see
# accounts.lockout). The lock lasts AXES_COOLOFF_MINUTES after the limit, doubling
# with each further failure of that pair (progressive delay), at most 24 hours.
AXES_HANDLER = "accounts.lockout.ProgressiveLockoutHandler"
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15)
AXES_COOLOFF_TIME = "accounts.lockout.cool_off"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_WHITELIST_CALLABLE = "accounts.lockout.not_a_password_login"
# Attempts while locked are refused without extending the lock.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# django-otp's own brute-force brake, per TOTP device (so across every address): after
# n wrong codes in a row the next code is not even checked for factor * 2**(n-1)
# seconds (0.25 s, 0.5 s, 1 s, ... 20 wrong codes: 36 hours). At 0.25 s a typo costs
# nothing (nobody retypes six digits that fast); django-otp's default of 1 s refused
# the right code typed straight after a typo. Together with the pair lockout above.
OTP_TOTP_THROTTLE_FACTOR = float(env_str("OTP_TOTP_THROTTLE_FACTOR", "0.25"))

OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT")
OIDC_OP_LOGOUT_ENDPOINT = env_str("OIDC_OP_LOGOUT_ENDPOINT")
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER")
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and OIDC_OP_AUTHORIZATION_ENDPOINT)
# mozilla-django-oidc's defaults are unsafe for us (NOTES.md): pin RS256, turn on
# PKCE, bound every call to the provider, and keep the ID token for the
# two-person rule.
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_SECONDS", 10)
OIDC_STORE_ID_TOKEN = True
# Longest ID token accepted (exp - iat), and how long after its iat (accounts.tokens).
OIDC_ID_TOKEN_MAX_LIFETIME_SECONDS = env_int("OIDC_ID_TOKEN_MAX_LIFETIME_SECONDS", 24 * 3600)
OIDC_ID_TOKEN_MAX_AGE_SECONDS = env_int("OIDC_ID_TOKEN_MAX_AGE_SECONDS", 12 * 3600)
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
# Group name in the ID token that grants the global "may create keystores" permission.
OIDC_CREATOR_GROUP = env_str("OIDC_CREATOR_GROUP")
OIDC_VERIFY_SSL = env_bool("OIDC_VERIFY_SSL", True)
OIDC_RP_LOGIN_URL_NAME = "oidc_authentication_init"
# The provider's token endpoint is called with client_secret_basic (the OIDC default).
OIDC_TOKEN_USE_BASIC_AUTH = env_bool("OIDC_TOKEN_USE_BASIC_AUTH", True)
# The portal's own views: full ID token verification, (iss, sub) kept in the session, 404 when OIDC is off.
OIDC_AUTHENTICATE_CLASS = "accounts.oidc.PortalOIDCAuthenticationRequestView"
OIDC_CALLBACK_CLASS = "accounts.oidc.PortalOIDCCallbackView"
# IdP group -> permissions, e.g. {"kms-creators": ["keystores.add_keystore"]} (see accounts.services).
OIDC_GROUP_PERMISSIONS: dict[str, list[str]] = {}
if not DEBUG and not OIDC_ENABLED and not BYOK_LOCAL_LOGIN:
    raise ImproperlyConfigured("Neither OIDC (OIDC_RP_CLIENT_ID, ...) nor local login is enabled: nobody could log in.")
if OIDC_ENABLED:
    for _name in ("OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_JWKS_ENDPOINT", "OIDC_OP_ISSUER"):
        if not globals()[_name]:
            _missing.append(_name)

# --- REST framework -----------------------------------------------------------
REST_FRAMEWORK = {
    # Every JSON body in the API goes through one parser that answers 400 to what json.loads lets through.
    "DEFAULT_PARSER_CLASSES": ["byok_portal.parsers.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Before the ID-token class: both read "Bearer", and only this one knows the byok_ prefix.
        "tokens.authentication.ApiTokenAuthentication",
        "accounts.authentication.BearerIDTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("BYOK_THROTTLE_USER", "600/min"),
        "lifecycle": env_str("BYOK_THROTTLE_LIFECYCLE", "60/min"),
        "download": env_str("BYOK_THROTTLE_DOWNLOAD", "10/min"),
    },
    "EXCEPTION_HANDLER": "byok_portal.api.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "BYOK Portal API",
    # The docs page's introduction: every way to authenticate, the limits (docs/api-authentication.md).
    "DESCRIPTION": (BASE_DIR / "docs" / "api-authentication.md").read_text(encoding="utf-8"),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the sidecar package, served locally: the portal works without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Keys and keystores both have a "state": name each choice set, so the schema says which is which.
    "ENUM_NAME_OVERRIDES": {
        "KeyStateEnum": "byok_portal.vocabulary.KeyState",
        "KeystoreStateEnum": "keystores.models.KeystoreState",
        "MaterialStateEnum": "keys.models.MaterialState",
    },
}

# --- Shared counters -----------------------------------------------------------
# DRF's throttle counters live in the default cache. It must be one store for every
# web process: with a per-process cache, N gunicorn workers let N times the rate
# through. CACHE_URL: redis://host:6379/1 (recommended in production), or db:// (the
# default: Django's database cache, table created by migration accounts.0003), or
# locmem:// (one process only; refused outside debug mode).
CACHE_URL = env_str("CACHE_URL", "db://")
DATABASE_CACHE_TABLE = "byok_cache"
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    _cache: dict[str, object] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
elif CACHE_URL == "db://":
    _cache = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": DATABASE_CACHE_TABLE}
elif CACHE_URL == "locmem://" and DEBUG:
    _cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
else:
    raise ImproperlyConfigured(
        f"CACHE_URL={CACHE_URL!r}: use redis://..., db:// or (debug mode only) locmem://. "
        "Throttle counters must be shared by every process."
    )
CACHES = {"default": _cache}

# --- Celery -------------------------------------------------------------------
# Without CELERY_BROKER_URL the embedded default is kombu's filesystem transport,
# so `make run` needs no broker process; production points this at Redis.
# The filesystem broker lives on one machine's disk: fine for `make run`, wrong for
# N web processes and workers on several hosts, so production must name its broker.
CELERY_BROKER_URL = _required("CELERY_BROKER_URL", "filesystem://")
# How long work may take (README "Background work"). Every task ends within
# BYOK_TASK_TIME_LIMIT seconds: the prefork pool kills it after that (the soft limit
# lets it stop cleanly first), and long work — cleanup, the KMS scan for orphans,
# reconciling a large keystore — stops taking new batches after BYOK_TASK_BUDGET_SECONDS
# and hands the rest to a new task.
BYOK_TASK_BUDGET_SECONDS = env_int("BYOK_TASK_BUDGET_SECONDS", 60)
CELERY_TASK_TIME_LIMIT = env_int("BYOK_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - 30)
# Redis hands a message whose worker died (acks_late: never acknowledged) to another
# worker after the visibility timeout. Sized to the longest task, plus a quarter: a
# task still running is never handed out twice, and a killed one is back within
# minutes instead of Redis' one-hour default.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", -(-CELERY_TASK_TIME_LIMIT * 5 // 4))
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = (
    {
        "data_folder_in": str(VAR_DIR / "celery" / "queue"),
        "data_folder_out": str(VAR_DIR / "celery" / "queue"),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        # Broadcast/pidbox exchanges; kombu's default is ./control in the working directory.
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL == "filesystem://"
    else {
        "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
        # Look for abandoned messages every ~30 s (kombu's default is every ~100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 3,
    }
)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# The default keeps beat's state in a file (`make run` passes --schedule); set
# "byok_portal.beat:LockedDatabaseScheduler" to edit schedules in the admin. Both send only
# while holding a lock in Redis, so a second beat started by mistake stays a standby (byok_portal/beat.py).
CELERY_BEAT_SCHEDULER = env_str("CELERY_BEAT_SCHEDULER", "byok_portal.beat:LockedPersistentScheduler")
BYOK_BEAT_LOCK_URL = env_str("BYOK_BEAT_LOCK_URL")  # empty: the broker's Redis
BYOK_BEAT_LOCK_SECONDS = env_int("BYOK_BEAT_LOCK_SECONDS", 30)  # a dead beat's standby takes over within this
CELERY_BEAT_SCHEDULE = {
    "daily-cleanup": {
        "task": "keys.tasks.cleanup_due_keys",
        "schedule": crontab(minute=env_int("BYOK_CLEANUP_MINUTE", 15), hour=env_int("BYOK_CLEANUP_HOUR", 2)),
    },
    "rotate-due-keys": {
        "task": "keys.tasks.rotate_due_keys",
        "schedule": crontab(minute=env_int("BYOK_ROTATION_MINUTE", 30), hour=env_int("BYOK_ROTATION_HOUR", 3)),
    },
    "reimport-expiring-materials": {
        "task": "keys.tasks.reimport_expiring_materials",
        "schedule": crontab(minute=env_int("BYOK_REIMPORT_MINUTE", 45)),
    },
    "reconcile": {
        "task": "keys.tasks.reconcile_all",
        "schedule": float(env_int("BYOK_RECONCILE_INTERVAL_SECONDS", 3600)),
    },
    "expiry-warnings": {
        "task": "keys.tasks.warn_expiring_keys",
        "schedule": crontab(minute=0, hour=env_int("BYOK_EXPIRY_WARNING_HOUR", 6)),
    },
    "expire-approvals": {"task": "approvals.tasks.expire_approvals", "schedule": 300.0},
}
# An approved request's run is claimed for this long (approvals/services.py): a claim older than
# that belongs to a worker that died (the pool kills every task by BYOK_TASK_TIME_LIMIT), and the
# redelivered task or the beat's sweep claims the request again.
BYOK_APPROVAL_LEASE_SECONDS = env_int("BYOK_APPROVAL_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 60)
# Runs an approved request may have before it ends FAILED (run_abandoned): each claim after the first
# takes over a run lost with its worker, and a run that kills its worker every time must not be retried forever.
BYOK_APPROVAL_MAX_RUNS = env_int("BYOK_APPROVAL_MAX_RUNS", 3)
# Keys cleaned per transaction; bounds the cleanup's memory and lock time.
BYOK_CLEANUP_BATCH_SIZE = env_int("BYOK_CLEANUP_BATCH_SIZE", 500)
# KMS calls per second per keystore during reconciliation (0: unlimited); KMS
# request quotas are shared with the customer's own workloads in that account.
BYOK_RECONCILE_KMS_CALLS_PER_SECOND = env_int("BYOK_RECONCILE_KMS_CALLS_PER_SECOND", 10)
# Bulk jobs (jobs/): tasks working each keystore's items side by side (the quotas keep them within
# the account's share together). On PostgreSQL a claimed item's lease is a session advisory lock
# (free the moment its worker dies); without one (SQLite) an item claimed longer ago than this
# counts as abandoned and is taken over, having checked the audit trail.
BYOK_JOB_TASKS_PER_LANE = env_int("BYOK_JOB_TASKS_PER_LANE", 2)
# Items one lane task works before it goes back in the queue (workers then rotate between lanes).
BYOK_JOB_ITEMS_PER_TASK = env_int("BYOK_JOB_ITEMS_PER_TASK", 10)
BYOK_JOB_ITEM_LEASE_SECONDS = env_int("BYOK_JOB_ITEM_LEASE_SECONDS", 600)
# Keys one reconcile_keystore task checks before handing the rest to a new task,
# so no task runs anywhere near the broker's visibility timeout.
BYOK_RECONCILE_CHUNK = env_int("BYOK_RECONCILE_CHUNK", 200)

# --- AWS and key custody ------------------------------------------------------
# KMS request quotas (SPEC §14; byok_portal/kms_quotas.py): every KMS call waits for a slot
# of its (account, region, operation) schedule at AWS's default rate times this share,
# leaving the rest to the customer's own workloads. Overrides: JSON {"Operation": calls/s}.
BYOK_KMS_QUOTA_SHARE = env_float("BYOK_KMS_QUOTA_SHARE", 0.5)
BYOK_KMS_QUOTA_OVERRIDES: dict[str, float] = json.loads(env_str("BYOK_KMS_QUOTA_OVERRIDES") or "{}")
# Where the schedules live, shared by every process; empty: in each process's memory.
BYOK_KMS_QUOTA_REDIS_URL = env_str(
    "BYOK_KMS_QUOTA_REDIS_URL",
    next((url for url in (CACHE_URL, CELERY_BROKER_URL) if url.startswith(("redis://", "rediss://"))), ""),
)
BYOK_SANDBOX = env_bool("BYOK_SANDBOX", False)
BYOK_SANDBOX_URL = env_str("BYOK_SANDBOX_URL", "http://127.0.0.1:4566")
# The portal's own principal, as customers must name it in their role trust policy.
# Empty: discovered once with sts:GetCallerIdentity.
BYOK_AWS_PRINCIPAL_ARN = env_str("BYOK_AWS_PRINCIPAL_ARN")
BYOK_AWS_CONNECT_TIMEOUT = env_int("BYOK_AWS_CONNECT_TIMEOUT", 5)
BYOK_AWS_READ_TIMEOUT = env_int("BYOK_AWS_READ_TIMEOUT", 20)
BYOK_AWS_MAX_ATTEMPTS = env_int("BYOK_AWS_MAX_ATTEMPTS", 4)
BYOK_AWS_SESSION_SECONDS = env_int("BYOK_AWS_SESSION_SECONDS", 3600)
# Who may scrape /metrics (byok_portal/metrics.py): a bearer token, and/or addresses (CIDRs) scraping
# gunicorn directly. Both empty by default: /metrics answers 404 to everyone.
BYOK_METRICS_TOKEN = env_str("BYOK_METRICS_TOKEN")
BYOK_METRICS_ALLOWED_IPS = env_list("BYOK_METRICS_ALLOWED_IPS", [])
# The RSA key KMS wraps imported material with: RSA_4096 by default (the strongest KMS offers).
BYOK_IMPORT_WRAPPING_KEY_SPEC = env_str("BYOK_IMPORT_WRAPPING_KEY_SPEC", "RSA_4096")
if BYOK_IMPORT_WRAPPING_KEY_SPEC not in ("RSA_2048", "RSA_3072", "RSA_4096"):
    raise ImproperlyConfigured("BYOK_IMPORT_WRAPPING_KEY_SPEC must be RSA_2048, RSA_3072 or RSA_4096")
BYOK_TAG_KEY = env_str("BYOK_TAG_KEY", "byok-portal:key-id")
BYOK_ALIAS_PREFIX = env_str("BYOK_ALIAS_PREFIX", "alias/")
BYOK_DELETION_WINDOW_DAYS = env_int("BYOK_DELETION_WINDOW_DAYS", 30)
BYOK_DOWNLOAD_PREPARE_TTL_SECONDS = env_int("BYOK_DOWNLOAD_PREPARE_TTL_SECONDS", 24 * 3600)
BYOK_EXPIRY_WARNING_DAYS = env_int("BYOK_EXPIRY_WARNING_DAYS", 30)
BYOK_AUTO_REUPLOAD = env_bool("BYOK_AUTO_REUPLOAD", False)
# How long a rotation waits for AWS to finish RotateKeyOnDemand (AWS rotates in the background).
BYOK_ROTATION_CONFIRM_SECONDS = env_int("BYOK_ROTATION_CONFIRM_SECONDS", 10)
# Seconds between scheduled rotations: each spends a GetParametersForImport of AWS's 0.25/s (per account+region).
BYOK_ROTATION_PACE_SECONDS = env_int("BYOK_ROTATION_PACE_SECONDS", 4)
# A key with material_valid_days has its material imported again this many days before AWS's ValidTo
# (or at half its validity, if shorter), by the hourly re-import task, paced like rotations.
BYOK_REIMPORT_MARGIN_DAYS = env_int("BYOK_REIMPORT_MARGIN_DAYS", 3)

# Custody backend (SPEC §13): "software" seals material under BYOK_KEK; "pkcs11" keeps the KEK
# in an HSM and generates, wraps and checks material there (keys/hsm.py, README "Custody in an HSM").
BYOK_CUSTODY = env_str("BYOK_CUSTODY", "software")
if BYOK_CUSTODY not in ("software", "pkcs11"):
    raise ImproperlyConfigured("BYOK_CUSTODY must be software or pkcs11")
BYOK_PKCS11_MODULE = env_str("BYOK_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
BYOK_PKCS11_TOKEN_LABEL = env_str("BYOK_PKCS11_TOKEN_LABEL")
BYOK_PKCS11_PIN = env_str("BYOK_PKCS11_PIN")
BYOK_PKCS11_PIN_FILE = env_str("BYOK_PKCS11_PIN_FILE")
BYOK_PKCS11_KEK_LABEL = env_str("BYOK_PKCS11_KEK_LABEL", "byok-portal-kek")
# RSA-OAEP's hash for wrapping inside the HSM: SHA256 (KMS's RSAES_OAEP_SHA_256), or SHA1 for tokens
# whose CKM_RSA_PKCS_OAEP only offers SHA-1 (SoftHSM2 2.6): KMS then gets RSAES_OAEP_SHA_1.
BYOK_PKCS11_OAEP_HASH = env_str("BYOK_PKCS11_OAEP_HASH", "SHA256")
if BYOK_PKCS11_OAEP_HASH not in ("SHA256", "SHA1"):
    raise ImproperlyConfigured("BYOK_PKCS11_OAEP_HASH must be SHA256 or SHA1")
BYOK_PKCS11_POOL_SIZE = env_int("BYOK_PKCS11_POOL_SIZE", 4)
BYOK_PKCS11_WAIT_SECONDS = env_int("BYOK_PKCS11_WAIT_SECONDS", 10)
if BYOK_CUSTODY == "pkcs11" and not BYOK_PKCS11_TOKEN_LABEL:
    raise ImproperlyConfigured("BYOK_CUSTODY=pkcs11 needs BYOK_PKCS11_TOKEN_LABEL")
# The KEK wraps every key's material; losing it loses every key. In debug mode a
# development KEK is generated once under var/ so that restarts keep working.
BYOK_KEK = env_str("BYOK_KEK")
BYOK_KEK_FILE = env_str("BYOK_KEK_FILE", str(VAR_DIR / "dev-kek.b64") if DEBUG else "")
# With pkcs11 the KEK is in the HSM; BYOK_KEK is then only needed to migrate software-sealed rows.
if not DEBUG and BYOK_CUSTODY == "software" and not (BYOK_KEK or BYOK_KEK_FILE):
    _missing.append("BYOK_KEK")
BYOK_KEK_PREVIOUS = env_str("BYOK_KEK_PREVIOUS")
BYOK_AUDIT_KEY = _required("BYOK_AUDIT_KEY", "development-audit-key")
# Keys the HMAC-SHA-256 under which API tokens are stored (tokens.models.ApiToken): a database
# dump without it cannot test guessed tokens. Changing it invalidates every token.
BYOK_TOKEN_KEY = _required("BYOK_TOKEN_KEY", "development-token-key")

# --- Notifications and reports (SPEC §15) --------------------------------------
# Email through Django's backends: SMTP from the environment in production; in debug mode (`make run`)
# the console backend prints each email. Webhooks must be https:// unless debugging (or the tests say so).
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "byok-portal@localhost")
BYOK_WEBHOOK_ALLOW_HTTP = env_bool("BYOK_WEBHOOK_ALLOW_HTTP", DEBUG)
# Webhooks reach public addresses only (notifications/egress.py: no metadata service, loopback or
# private networks); on-premises receivers need their networks listed here, as CIDRs.
BYOK_WEBHOOK_ALLOWED_NETWORKS = env_networks("BYOK_WEBHOOK_ALLOWED_NETWORKS", [])
BYOK_WEBHOOK_TIMEOUT_SECONDS = env_int("BYOK_WEBHOOK_TIMEOUT_SECONDS", 10)
BYOK_WEBHOOK_MAX_ATTEMPTS = env_int("BYOK_WEBHOOK_MAX_ATTEMPTS", 8)
BYOK_WEBHOOK_BACKOFF_SECONDS = env_int("BYOK_WEBHOOK_BACKOFF_SECONDS", 30)
BYOK_WEBHOOK_BACKOFF_CAP_SECONDS = env_int("BYOK_WEBHOOK_BACKOFF_CAP_SECONDS", 3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "byok_portal.logging.JSONFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # botocore logs request bodies at DEBUG, and ImportKeyMaterial's body holds
        # wrapped material: never let it below INFO.
        "botocore": {"level": "WARNING"},
        "boto3": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}

if _missing:
    raise ImproperlyConfigured(
        "Missing production settings (set them, or DJANGO_DEBUG=true for development; in a checkout, `make run` "
        "once lets manage.py use its development settings): " + ", ".join(_missing)
    )
