"""A real OpenID Connect provider for the sign-in tests: `oidc-provider-mock` (from the package index) in a
process of its own, on a free port.

Configured as Keycloak and Entra are for an API: access tokens are JWTs (RFC 9068) signed with the provider's
key, for the API's audience, carrying the person's `groups`. A test may also ask it to misbehave for one
person, to see the dashboard refuse what it then sends: an ID token from a foreign issuer, for another
audience, or tampered with after signing.

    python -m tests.support.oidc_provider --port P --audience A --token-max-age S
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tools.embedded import free_port

MISCHIEF = ("foreign_issuer", "wrong_audience", "tampered")


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _serve(port: int, audience: str, token_max_age_s: int) -> None:
    import flask  # noqa: PLC0415 - the provider process only
    import uvicorn  # noqa: PLC0415
    from authlib.jose import jwt  # noqa: PLC0415
    from oidc_provider_mock import init_app  # type: ignore[import-untyped]  # noqa: PLC0415 - ships no types

    app = flask.Flask("oidc_provider_mock._app")  # its templates
    mischief: dict[str, str] = {}  # subject -> what to do to the next ID tokens they get
    outage: dict[str, int] = {}  # subject -> how many of their next refreshes are answered 503
    refreshes: dict[str, int] = {}  # subject -> how many refreshes of their tokens were asked for

    def sign(claims: dict[str, Any]) -> str:
        key = flask.g.oidc_provider_mock_storage.jwk
        return jwt.encode({"alg": "RS256", "kid": key.as_dict()["kid"], "typ": "JWT"}, claims, key).decode()

    def access_token(client: Any, grant_type: str, user: Any, scope: str) -> str:
        now = int(time.time())
        return sign({"iss": flask.request.host_url.rstrip("/"), "aud": audience, "sub": user.sub,
                     "client_id": client.id, "scope": scope, "iat": now, "exp": now + token_max_age_s,
                     "jti": base64.urlsafe_b64encode(os.urandom(12)).decode(),
                     **{k: v for k, v in user.claims.items() if k == "groups"}})

    app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = access_token
    init_app(app, require_nonce=True, access_token_max_age=timedelta(seconds=token_max_age_s))
    app.secret_key = os.urandom(16)

    @app.post("/test/mischief")
    def set_mischief() -> tuple[str, int]:
        body = flask.request.get_json()
        mischief[body["sub"]] = body["kind"]
        return "", 204

    @app.post("/test/refresh-outage")
    def set_refresh_outage() -> tuple[str, int]:
        body = flask.request.get_json()
        outage[body["sub"]] = body["refreshes"]
        return "", 204

    @app.get("/test/refreshes/<sub>")
    def refreshes_of(sub: str) -> dict[str, int]:
        return {"asked": refreshes.get(sub, 0), "outage_left": outage.get(sub, 0)}

    @app.before_request
    def refresh_outage() -> tuple[str, int] | None:
        form = flask.request.form
        if flask.request.path != "/oauth2/token" or form.get("grant_type") != "refresh_token":
            return None
        token = flask.g.oidc_provider_mock_storage.get_refresh_token(form.get("refresh_token", ""))
        if token is not None:
            refreshes[token.user_id] = refreshes.get(token.user_id, 0) + 1
        if token is not None and outage.get(token.user_id, 0) > 0:
            outage[token.user_id] -= 1
            return "<html>the provider is down for maintenance</html>", 503
        return None

    @app.after_request
    def misbehave(response: flask.Response) -> flask.Response:
        if flask.request.path != "/oauth2/token" or response.status_code != 200:
            return response
        body = response.get_json()
        if "id_token" not in body:  # a refresh
            return response
        claims = _payload(body["id_token"])
        kind = mischief.get(claims["sub"])
        if kind == "foreign_issuer":
            body["id_token"] = sign({**claims, "iss": "https://foreign-idp.example.test"})
        elif kind == "wrong_audience":
            body["id_token"] = sign({**claims, "aud": "another-application"})
        elif kind == "tampered":
            header, _, signature = body["id_token"].split(".")
            forged = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "someone-else"}).encode())
            body["id_token"] = f"{header}.{forged.decode().rstrip('=')}.{signature}"
        response.set_data(json.dumps(body))
        return response

    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain HTTP on loopback
    uvicorn.run(app, interface="wsgi", host="127.0.0.1", port=port, log_level="warning")


@dataclass(frozen=True)
class Provider:
    url: str  # the issuer

    def set_user(self, sub: str, **claims: Any) -> None:
        self._send("PUT", f"/users/{sub}", claims)

    def revoke(self, sub: str) -> None:
        """Withdraw every token of `sub`: their next refresh fails."""
        self._send("POST", f"/users/{sub}/revoke-tokens", {})

    def refresh_outage(self, sub: str, refreshes: int) -> None:
        """Answer `sub`'s next `refreshes` refreshes 503, as a provider down for a moment does."""
        self._send("POST", "/test/refresh-outage", {"sub": sub, "refreshes": refreshes})

    def refreshes(self, sub: str) -> dict[str, int]:
        """How many refreshes of `sub`'s tokens were asked for (`asked`), and the 503s still to come."""
        response = httpx.get(f"{self.url}/test/refreshes/{sub}", timeout=5)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def misbehave(self, sub: str, kind: str) -> None:
        assert kind in MISCHIEF
        self._send("POST", "/test/mischief", {"sub": sub, "kind": kind})

    def _send(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = httpx.request(method, self.url + path, json=body, timeout=5)
        assert response.status_code in (200, 204), response.text


@contextmanager
def running_provider(log_path: Path, *, audience: str, token_max_age_s: int) -> Iterator[Provider]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[2]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.oidc_provider", "--port", str(port), "--audience", audience,
             "--token-max-age", str(token_max_age_s)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the OpenID provider did not start within 30 s"
            try:
                if httpx.get(url + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield Provider(url)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--token-max-age", type=int, required=True)
    arguments = parser.parse_args()
    _serve(arguments.port, arguments.audience, arguments.token_max_age)
