"""Tokens verified against an identity provider's JWKS: RS256 and ES256, issuer and audience,
a rotated key accepted without restarting the backend, and keys fetched in the background only: a slow
or down provider never holds a request, and unknown `kid`s cost it at most one fetch per cooldown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from backend.app import create_app
from tests.support.backends import JWT_SECRET, start_backend
from tests.support.settings import backend_settings
from tests.support.waits import eventually

ISSUER, AUDIENCE = "https://idp.example.test", "switchboard"


class Jwks:
    """A loopback JWKS endpoint whose key set the test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.fetches = 0
        self.refused = 0  # answered 503
        self.released = threading.Event()  # cleared: each fetch waits for the test to set it (slow provider)
        self.released.set()
        self.held = 0  # fetches waiting for it
        self.down = False  # a provider answering 503
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                jwks.held += 1
                jwks.released.wait(timeout=30)
                jwks.held -= 1
                if jwks.down:
                    self.send_error(503)
                    jwks.refused += 1
                    return
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet: a test reads what the provider served, not its access log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, kid: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str) -> None:
        public = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        self.keys = [{**public, "kid": kid, "alg": alg, "use": "sig"}]


def signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str = "RS256",
           **changes: object) -> str:
    now = datetime.now(UTC)
    claims = {"sub": "idp-user-1", "roles": ["manager"], "sites": "*", "iss": ISSUER, "aud": AUDIENCE,
              "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=5)).timestamp())}
    claims.update(changes)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def jwks_backend(settings, workdir):
    jwks = Jwks()
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish("k1", first, "RS256")
    env = {"SWITCHBOARD_JWKS_URL": jwks.url, "SWITCHBOARD_JWT_ISSUER": ISSUER,
           "SWITCHBOARD_JWT_AUDIENCE": AUDIENCE, "SWITCHBOARD_JWKS_COOLDOWN_S": "0.5"}
    process = start_backend(settings, workdir / "backend-jwks.log", env)
    yield process, jwks, first
    jwks.released.set()
    process.stop()
    jwks.server.shutdown()
    jwks.server.server_close()


async def test_jwks_tokens_and_key_rotation_without_restart(jwks_backend):
    process, jwks, first = jwks_backend
    async with httpx.AsyncClient(base_url=process.url) as client:
        async def status(token: str) -> int:
            response = await client.get("/api/v1/flow", headers={"Authorization": f"Bearer {token}"})
            return response.status_code

        assert await status(signed(first, "k1")) == 200
        assert await status(signed(first, "k1", iss="https://evil.example.test")) == 401
        assert await status(signed(first, "k1", aud="another-app")) == 401
        assert await status(signed(first, "unknown-kid")) == 401
        # the shared secret means nothing once an identity provider is configured (no key confusion)
        hs = jwt.encode({"sub": "x", "roles": ["admin"], "sites": "*", "iss": ISSUER, "aud": AUDIENCE,
                         "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())}, JWT_SECRET,
                        headers={"kid": "k1"})
        assert await status(hs) == 401

        second = ec.generate_private_key(ec.SECP256R1())
        jwks.publish("k2", second, "ES256")
        # the first use of the new kid asks for a refresh in the background; it is there within the cooldown
        await eventually(lambda: _is(200, status(signed(second, "k2", alg="ES256"))), timeout=5)
        assert await status(signed(first, "k1")) == 401, "the retired key no longer verifies"


async def _is(expected: int, answer) -> bool:
    return await answer == expected


async def test_a_slow_or_down_provider_never_holds_a_request_and_its_last_keys_keep_serving(
        jwks_backend):
    """The provider holds every fetch until the test lets it go: a request that waited for one would not be
    answered within the client's timeout."""
    process, jwks, first = jwks_backend
    async with httpx.AsyncClient(base_url=process.url, timeout=5) as client:
        async def status(token: str) -> int:
            response = await client.get("/api/v1/flow", headers={"Authorization": f"Bearer {token}"})
            return response.status_code

        async def fetch_held() -> bool:
            return jwks.held > 0

        assert await status(signed(first, "k1")) == 200
        jwks.released.clear()
        assert await status(signed(first, "unknown-kid")) == 401, "an unknown kid is refused at once"
        await eventually(fetch_held)  # the refresh it asked for runs, in the background
        assert await status(signed(first, "k1")) == 200, "known keys serve while a refresh is under way"
        assert await status(signed(first, "another-unknown-kid")) == 401

        jwks.down = True
        jwks.released.set()
        answers: list[int] = []

        async def refresh_met_the_outage() -> bool:
            # once the held refresh and its cooldown are over, an unknown kid asks again: the provider is down
            answers.append(await status(signed(first, "a-third-unknown-kid")))
            return jwks.refused > 0

        await eventually(refresh_met_the_outage)
        assert set(answers) == {401}, answers
        for _ in range(5):  # through the backend's handling of that 503, whenever it lands
            assert await status(signed(first, "k1")) == 200, "the last keys fetched keep serving"
            await asyncio.sleep(0.2)


async def test_unknown_kids_cost_the_provider_at_most_one_fetch_per_cooldown(jwks_backend):
    process, jwks, first = jwks_backend
    async with httpx.AsyncClient(base_url=process.url) as client:
        assert (await client.get("/api/v1/flow", headers={"Authorization": f"Bearer {signed(first, 'k1')}"})
                ).status_code == 200
        await asyncio.sleep(0.6)  # past any cooldown running
        before, started = jwks.fetches, time.monotonic()
        for n in range(60):
            response = await client.get("/api/v1/flow",
                                        headers={"Authorization": f"Bearer {signed(first, f'made-up-{n}')}"})
            assert response.status_code == 401
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.6)  # a refresh asked for during the last cooldown runs after it
    # one fetch right away, then at most one per cooldown (0.5 s) of the flood, and the one after it
    assert 1 <= jwks.fetches - before <= 2 + int(elapsed / 0.5), (jwks.fetches - before, elapsed)


def hand_signed(header: dict, claims: dict, key: bytes | None) -> str:
    """A token made by hand, for the algorithms PyJWT rightly refuses to produce
    (none, HMAC with a public key)."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_forged_tokens_are_refused_with_an_identity_provider(jwks_backend):
    process, _, first = jwks_backend
    now = datetime.now(UTC)
    claims = {"sub": "forger", "roles": ["admin"], "sites": "*", "iss": ISSUER, "aud": AUDIENCE,
              "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=5)).timestamp())}
    public_pem = first.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        # key confusion: HMAC keyed with the provider's public key, which anyone can fetch
        "hs256 with the public key": hand_signed({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims,
                                                 public_pem),
        "alg none with a known kid": hand_signed({"alg": "none", "typ": "JWT", "kid": "k1"}, claims, None),
        "another key claiming kid k1": jwt.encode(claims, attacker, algorithm="RS256", headers={"kid": "k1"}),
        # a key URL in the token is never followed: only the configured JWKS counts
        "jku to the attacker's keys": jwt.encode(claims, attacker, algorithm="RS256",
                                                 headers={"kid": "evil", "jku": "http://127.0.0.1:9/keys.json"}),
        "no kid": jwt.encode(claims, first, algorithm="RS256"),
        "expired": signed(first, "k1", exp=int((now - timedelta(minutes=1)).timestamp())),
        "not yet valid": signed(first, "k1", nbf=int((now + timedelta(minutes=10)).timestamp())),
        "no audience": signed(first, "k1", aud=None),
    }
    async with httpx.AsyncClient(base_url=process.url) as client:
        statuses = {name: (await client.get("/api/v1/flow",
                                             headers={"Authorization": f"Bearer {token}"})).status_code
                    for name, token in forged.items()}
        assert (await client.get("/api/v1/flow", headers={"Authorization": f"Bearer {signed(first, 'k1')}"})
                ).status_code == 200
    assert statuses == dict.fromkeys(forged, 401)


def test_with_a_jwks_the_backend_starts_only_with_a_signing_secret_every_replica_shares():
    # a secret made up in each replica's data folder would sign manual and own events differently on each
    settings = {"database_url": "postgresql://unused", "nats_url": "nats://unused",
                "jwks_url": "http://127.0.0.1:9/jwks.json", "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    with pytest.raises(SystemExit, match="SWITCHBOARD_SIGNING_SECRET"):
        create_app(backend_settings(**settings))
    shared = backend_settings(**settings, signing_secret="fake-signing-secret-every-replica-shares")
    assert create_app(shared).plugins


@pytest.mark.parametrize("missing", ["jwt_issuer", "jwt_audience"])
def test_with_a_jwks_the_backend_starts_only_with_an_issuer_and_an_audience(missing):
    # without them any token the provider issued, to any application, for anyone, would do
    settings = {"database_url": "postgresql://unused", "nats_url": "nats://unused",
                "signing_secret": "fake-signing-secret-every-replica-shares",
                "jwks_url": "http://127.0.0.1:9/jwks.json", "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    del settings[missing]
    with pytest.raises(SystemExit, match="SWITCHBOARD_JWT_ISSUER and SWITCHBOARD_JWT_AUDIENCE"):
        create_app(backend_settings(**settings))
