"""Verifying OpenID Connect ID tokens: one routine for browser logins and bearer tokens.

mozilla-django-oidc's own check skips the audience and the issuer (NOTES.md), so
both the login backend and the DRF bearer authentication call :func:`verify_id_token`,
which pins everything SPEC §3 asks for: the signature against the provider's JWKS,
the configured algorithm only (never ``none``, never an HMAC keyed with a public
key), ``iss``, ``aud``, ``exp`` and, at login, the nonce.
"""

from __future__ import annotations

import hmac
import ssl
import threading
import time
from typing import Any

import jwt
from django.conf import settings

# Clock skew tolerated between the provider and the portal, in seconds.
LEEWAY_SECONDS = 30
# How long a fetched JWK Set is trusted before it is fetched again; a token with an
# unknown ``kid`` triggers an earlier refetch (key rotation), rate-limited by PyJWT.
JWKS_CACHE_SECONDS = 300
# HMAC algorithms would be keyed with something public (the client secret is shared
# with the provider, the JWKS is public): never accept them for ID tokens here.
_REFUSED_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})

_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})

_clients: dict[tuple[str, float, bool], jwt.PyJWKClient] = {}
_clients_lock = threading.Lock()


class InvalidIDToken(Exception):
    """An ID token the portal does not accept; the message is safe to show the caller."""


def _jwks_client(url: str) -> jwt.PyJWKClient:
    """One caching JWKS client per endpoint (and timeout/TLS setting), shared by the process."""
    timeout = float(settings.OIDC_TIMEOUT or 10)
    verify_ssl = bool(getattr(settings, "OIDC_VERIFY_SSL", True))
    cache_key = (url, timeout, verify_ssl)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            context = ssl.create_default_context()
            if not verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            # cache_keys=False: a key removed from the provider's JWKS must stop
            # verifying once the cached set expires, which a per-kid LRU would defeat.
            client = jwt.PyJWKClient(
                url,
                cache_keys=False,
                cache_jwk_set=True,
                lifespan=JWKS_CACHE_SECONDS,
                timeout=timeout,
                ssl_context=context,
            )
            _clients[cache_key] = client
        return client


def oidc_configured() -> bool:
    """Whether the portal is set up to accept ID tokens at all."""
    return bool(
        getattr(settings, "OIDC_ENABLED", False)
        and settings.OIDC_OP_ISSUER
        and settings.OIDC_OP_JWKS_ENDPOINT
        and settings.OIDC_RP_CLIENT_ID
    )


def verify_id_token(token: str, *, nonce: str | None = None) -> dict[str, Any]:
    """The verified claims of ``token``, or :class:`InvalidIDToken` saying what is wrong.

    ``nonce`` is given at login (the value the portal sent in the authorization
    request); bearer tokens are not tied to a request of ours and carry none to check.
    """
    if not oidc_configured():
        raise InvalidIDToken("OpenID Connect is not configured on this portal.")
    algorithm: str = settings.OIDC_RP_SIGN_ALGO
    if algorithm in _REFUSED_ALGORITHMS:
        raise InvalidIDToken(f"The portal is misconfigured: OIDC_RP_SIGN_ALGO={algorithm} is not allowed.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidIDToken("The token is not a well-formed JWT.") from exc
    token_alg = header.get("alg")
    if token_alg != algorithm:
        raise InvalidIDToken(f"Token algorithm {token_alg!r} is not accepted; expected {algorithm}.")
    # RFC 9068 §2.1: access tokens in JWT form say so in ``typ``. One signed by the
    # same provider for the same audience must still never pass for an ID token.
    if str(header.get("typ", "")).lower() in _ACCESS_TOKEN_TYPES:
        raise InvalidIDToken(f"The token is an access token (typ {header.get('typ')!r}), not an ID token.")
    try:
        signing_key = _jwks_client(settings.OIDC_OP_JWKS_ENDPOINT).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        raise InvalidIDToken("The identity provider's signing keys could not be fetched.") from exc
    except jwt.PyJWKClientError as exc:
        raise InvalidIDToken(f"No signing key {header.get('kid')!r} is published by the identity provider.") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIDToken("The token is not a well-formed JWT.") from exc
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=signing_key.key,
            algorithms=[algorithm],
            audience=settings.OIDC_RP_CLIENT_ID,
            issuer=settings.OIDC_OP_ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat"], "strict_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidIDToken("The token has expired.") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidIDToken("The token was issued for another client (wrong audience).") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidIDToken("The token was issued by another identity provider (wrong issuer).") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidIDToken(f"The token lacks the required claim {exc.claim!r}.") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidIDToken("The token's signature does not verify.") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidIDToken("The token is not valid yet.") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIDToken(f"The token is invalid: {exc}.") from exc
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidIDToken("The token's subject is empty.")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # OIDC Core 3.1.3.7: with several audiences, the authorized party must be us.
    if len(audiences) > 1 and claims.get("azp") != settings.OIDC_RP_CLIENT_ID:
        raise InvalidIDToken("The token was issued for another client (azp).")
    _check_lifetime(claims)
    if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
        raise InvalidIDToken("The token's nonce does not match the login request.")
    return claims


def _check_lifetime(claims: dict[str, Any]) -> None:
    """Bound what a leaked or mis-issued token can do: its lifetime and its age (``iat``).

    ID tokens live minutes to hours at every common provider; one valid for years is
    a misconfiguration or a forgery's tell, and would make a leaked token a lasting
    credential. ``OIDC_ID_TOKEN_MAX_LIFETIME_SECONDS`` (default 24 h) bounds
    ``exp - iat``; ``OIDC_ID_TOKEN_MAX_AGE_SECONDS`` (default 12 h) bounds how long
    after ``iat`` the portal still accepts it, whatever ``exp`` says. (An ``iat`` in
    the future is refused by PyJWT as "not valid yet".)
    """
    max_lifetime = int(getattr(settings, "OIDC_ID_TOKEN_MAX_LIFETIME_SECONDS", 24 * 3600))
    max_age = int(getattr(settings, "OIDC_ID_TOKEN_MAX_AGE_SECONDS", 12 * 3600))
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise InvalidIDToken("The token's iat and exp must be numbers.")
    if exp - iat > max_lifetime:
        raise InvalidIDToken(
            f"The token is valid for too long ({int(exp - iat)} s; at most {max_lifetime} s is accepted)."
        )
    if time.time() - iat > max_age + LEEWAY_SECONDS:
        raise InvalidIDToken(f"The token was issued too long ago (more than {max_age} s).")
