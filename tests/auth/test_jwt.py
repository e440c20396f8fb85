"""JWTs: a token from /auth/token works; every forged, altered, incomplete or stale one is a 401."""

from __future__ import annotations

import base64
import importlib.util
import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning

from tests.auth.support import assert_error, assert_ok
from tests.conftest import ADMIN_KEY, JWT_SECRET, Harness
from trellis.auth import repository
from trellis.settings import Role

ME = "/api/v1/auth/me"
PASSWORD = "correct horse battery staple"
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def valid_claims(user_id: str, **changes: Any) -> dict[str, Any]:
    """Claims exactly like the service issues; a change to ``None`` removes that claim."""
    # PyJWT checks exp against the real clock; the harness clock starts at the real now.
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "iss": "trellis",
        "aud": "trellis-api",
        "jti": "0123456789abcdef",
        "role": "developer",
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(claims: dict[str, Any], key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        # Our 44-byte test secret is "short" for HS384/HS512; irrelevant to a forgery.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm)


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{_b64json({'alg': alg, 'typ': 'JWT'})}.{_b64json(claims)}."


def rs256_token(claims: dict[str, Any]) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(claims, pem, algorithm="RS256")


def tampered(claims: dict[str, Any], **changes: Any) -> str:
    """A correctly signed token whose payload is then edited, keeping header and signature."""
    header, _payload, signature = sign(claims).split(".")
    return f"{header}.{_b64json({**claims, **changes})}.{signature}"


def stripped(claims: dict[str, Any]) -> str:
    header, payload, _signature = sign(claims).split(".")
    return f"{header}.{payload}."


# Each builds a token for the (enabled, existing) developer ``user_id``; ``admin_id`` is the admin.
Forger = Callable[[str, str], str]
ATTACKS: list[Any] = [
    pytest.param(lambda u, a: unsigned(valid_claims(u)), id="alg-none"),
    pytest.param(lambda u, a: unsigned(valid_claims(u), alg="None"), id="alg-None"),
    pytest.param(lambda u, a: unsigned(valid_claims(u), alg="NONE"), id="alg-NONE"),
    pytest.param(lambda u, a: sign(valid_claims(u), algorithm="HS512"), id="hs512-when-hs256-configured"),
    pytest.param(lambda u, a: sign(valid_claims(u), algorithm="HS384"), id="hs384-when-hs256-configured"),
    pytest.param(
        lambda u, a: rs256_token(valid_claims(u)),
        id="rs256",
        marks=pytest.mark.skipif(not HAS_CRYPTOGRAPHY, reason="cryptography is not installed: cannot sign RS256"),
    ),
    pytest.param(lambda u, a: stripped(valid_claims(u)), id="stripped-signature"),
    pytest.param(lambda u, a: sign(valid_claims(u)).rsplit(".", 1)[0], id="two-segments"),
    pytest.param(lambda u, a: tampered(valid_claims(u), sub=a), id="tampered-sub-to-admin"),
    pytest.param(lambda u, a: tampered(valid_claims(u), role="admin"), id="tampered-role-to-admin"),
    pytest.param(
        lambda u, a: tampered(valid_claims(u), exp=int(datetime.now(UTC).timestamp()) + 10 * 365 * 86400),
        id="tampered-exp-extended",
    ),
    pytest.param(
        lambda u, a: sign(
            valid_claims(
                u,
                iat=int((datetime.now(UTC) - timedelta(hours=2)).timestamp()),
                nbf=int((datetime.now(UTC) - timedelta(hours=2)).timestamp()),
                exp=int((datetime.now(UTC) - timedelta(hours=1)).timestamp()),
            )
        ),
        id="expired",
    ),
    pytest.param(lambda u, a: sign(valid_claims(u, exp=None)), id="no-exp"),
    pytest.param(lambda u, a: sign(valid_claims(u, iat=None)), id="no-iat"),
    pytest.param(lambda u, a: sign(valid_claims(u, sub=None)), id="no-sub"),
    pytest.param(lambda u, a: sign(valid_claims(u, iss=None)), id="no-iss"),
    pytest.param(lambda u, a: sign(valid_claims(u, aud=None)), id="no-aud"),
    pytest.param(lambda u, a: sign(valid_claims(u, aud="another-api")), id="wrong-aud"),
    pytest.param(lambda u, a: sign(valid_claims(u, iss="evil-issuer")), id="wrong-iss"),
    pytest.param(
        lambda u, a: sign(valid_claims(u), key="another-secret-0123456789-0123456789-0123"), id="other-secret"
    ),
    pytest.param(lambda u, a: sign(valid_claims(u, sub="usr_does_not_exist")), id="unknown-user"),
    pytest.param(lambda u, a: sign(valid_claims(u, sub=12345)), id="non-string-sub"),
    pytest.param(
        lambda u, a: sign(valid_claims(u, nbf=int((datetime.now(UTC) + timedelta(hours=1)).timestamp()))),
        id="not-yet-valid",
    ),
    pytest.param(lambda u, a: "garbage", id="garbage"),
    pytest.param(lambda u, a: "not.a.jwt", id="garbage-three-parts"),
    pytest.param(lambda u, a: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.%%%", id="garbage-signature-chars"),
]


async def test_forged_token_control_is_accepted(harness: Harness) -> None:
    """The forger's baseline (same claims, right secret) is accepted, so each attack fails for its one change."""
    user_id = await harness.create_user("dana")
    response = await harness.client.get(ME, headers=harness.auth(sign(valid_claims(user_id))))
    data = assert_ok(response)
    assert data["id"] == user_id
    assert data["auth"] == "jwt"


@pytest.mark.parametrize("forge", ATTACKS)
async def test_attack_token_is_refused(harness: Harness, forge: Forger) -> None:
    user_id = await harness.create_user("dana")
    token = forge(user_id, harness.admin.user_id)
    response = await harness.client.get(ME, headers=harness.auth(token))
    error = assert_error(response, 401, "authentication_error")
    assert user_id not in json.dumps(error)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
async def test_attack_token_is_refused_in_either_header(harness: Harness, header: str) -> None:
    user_id = await harness.create_user("dana")
    token = unsigned(valid_claims(user_id))
    value = f"Bearer {token}" if header == "Authorization" else token
    assert_error(await harness.client.get(ME, headers={header: value}), 401, "authentication_error")


async def test_expired_token_says_so(harness: Harness) -> None:
    user_id = await harness.create_user("dana")
    past = datetime.now(UTC) - timedelta(hours=1)
    token = sign(valid_claims(user_id, iat=int(past.timestamp()) - 60, exp=int(past.timestamp())))
    error = assert_error(await harness.client.get(ME, headers=harness.auth(token)), 401, "authentication_error")
    assert error["message"] == "Token has expired"


async def test_missing_credentials(harness: Harness) -> None:
    error = assert_error(await harness.client.get(ME), 401, "authentication_error")
    assert "Missing credentials" in error["message"]
    # A non-Bearer scheme is not a credential either.
    response = await harness.client.get(ME, headers={"Authorization": f"Basic {_b64(b'admin:x')}"})
    assert_error(response, 401, "authentication_error")


async def test_token_from_login_works(harness: Harness) -> None:
    user_id = await harness.create_user("erin", Role.VIEWER, password=PASSWORD)
    response = await harness.client.post("/api/v1/auth/token", json={"username": "erin", "password": PASSWORD})
    data = assert_ok(response)
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 86_400
    token = data["access_token"]

    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="trellis-api", issuer="trellis")
    assert claims["sub"] == user_id
    assert jwt.get_unverified_header(token)["alg"] == "HS256"

    me = assert_ok(await harness.client.get(ME, headers=harness.auth(token)))
    assert me == {
        "id": user_id,
        "username": "erin",
        "role": "viewer",
        "auth": "jwt",
        "key_id": None,
        "scopes": ["read"],
    }


async def test_token_of_disabled_user_is_refused_on_next_request(harness: Harness) -> None:
    user_id = await harness.create_user("frank", password=PASSWORD)
    token = harness.runtime.auth.issue_token(await _user(harness, user_id)).access_token
    assert_ok(await harness.client.get(ME, headers=harness.auth(token)))

    admin = harness.auth(ADMIN_KEY)
    assert_ok(await harness.client.post(f"/api/v1/users/{user_id}/disable", headers=admin))
    assert_error(await harness.client.get(ME, headers=harness.auth(token)), 401, "authentication_error")

    assert_ok(await harness.client.post(f"/api/v1/users/{user_id}/enable", headers=admin))
    assert_ok(await harness.client.get(ME, headers=harness.auth(token)))


async def test_token_role_claim_is_not_trusted(harness: Harness) -> None:
    """The role comes from the database, not the token: a demoted claim changes nothing either way."""
    user_id = await harness.create_user("gina", Role.VIEWER)
    token = sign(valid_claims(user_id, role="admin"))
    me = assert_ok(await harness.client.get(ME, headers=harness.auth(token)))
    assert me["role"] == "viewer"
    assert me["scopes"] == ["read"]
    assert_error(await harness.client.get("/api/v1/users", headers=harness.auth(token)), 403, "authorization_error")


async def _user(harness: Harness, user_id: str) -> Any:
    async with harness.runtime.database.session() as session:
        return await repository.user_by_id(session, user_id)


def test_decoded_forgeries_are_what_they_claim() -> None:
    """Guards the forgers themselves: a tampered token really carries the edited payload."""
    token = tampered(valid_claims("usr_a"), sub="usr_b", role="admin")
    payload = json.loads(_b64decode(token.split(".")[1]))
    assert payload["sub"] == "usr_b"
    assert payload["role"] == "admin"
    assert json.loads(_b64decode(unsigned(valid_claims("usr_a")).split(".")[0]))["alg"] == "none"
    assert jwt.get_unverified_header(sign(valid_claims("usr_a"), algorithm="HS512"))["alg"] == "HS512"
