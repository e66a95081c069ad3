"""The single sign-on's parts on their own: the store of sign-ins in progress, sessions that drop expired
tokens, the last-site memory keyed by a pseudonym only, the landing page a role starts on."""

from __future__ import annotations

import json
import time

import jwt

from dashboard.last_site import LastSites, pseudonym
from dashboard.oidc import OidcSection, StateCache
from dashboard.pages.signin import landing
from dashboard.session import Principal, Sessions, SignIn

KEY = "fake-signing-key-for-unsigned-reads-0000000"


def _token(ttl_s: float, **claims: object) -> str:
    claims = {"sub": "sso-person", "exp": int(time.time() + ttl_s), **claims}
    return jwt.encode(claims, KEY, algorithm="HS256")


async def test_sso_state_cache_forgets_what_expired_and_what_was_used():
    cache = StateCache()
    await cache.set("a", "kept", 60)
    await cache.set("b", "gone", 0.01)
    time.sleep(0.02)
    assert await cache.get("a") == "kept" and await cache.get("b") is None
    await cache.delete("a")
    assert await cache.get("a") is None


async def test_sso_sign_ins_anyone_starts_are_bounded():
    cache = StateCache(limit=1000)
    for n in range(5000):  # a flood of /auth/login
        await cache.set(f"flood-{n}", "x", 600)
    await cache.set("mine", "kept", 600)
    assert len(cache._items) <= 1001 and await cache.get("mine") == "kept"
    assert await cache.get("flood-0") is None  # the oldest went first


def test_sso_sessions_hand_out_a_refreshed_token_and_drop_an_expired_one():
    sessions = Sessions()
    sign_in = SignIn(_token(60, roles=["manager"], sites="*"), refresh_token="r", person="p" * 32)
    sessions.sign_in("browser", sign_in)
    assert sessions.from_provider() == [("browser", sign_in)]
    sign_in.access_token = fresh = _token(120, roles=["manager"], sites="*")  # what a refresh does
    assert sessions.token("browser") == fresh
    sign_in.access_token = _token(-1, roles=["manager"], sites="*")
    assert sessions.current("browser") is None and sessions.from_provider() == []
    sessions.sign_in("pasted", _token(60, roles=["sre"], sites="*"))
    assert sessions.from_provider() == []  # a pasted token is never refreshed


def test_sso_sign_in_expires_by_the_earlier_of_the_providers_word_and_the_tokens_own():
    now = time.time()
    # a provider's answer to a refresh stating its default hour, for a token that lives 16 s
    sign_in = SignIn(_token(16), refresh_token="r", expires_at=now + 3600, person="p" * 32)
    assert (expires_by := sign_in.expires_by()) is not None and expires_by <= now + 17
    assert SignIn(_token(3600), expires_at=now + 16).expires_by() == now + 16
    assert SignIn("opaque", expires_at=now + 16).expires_by() == now + 16
    assert SignIn("opaque").expires_by() is None


def test_sso_sessions_forget_a_sign_in_whose_tabs_are_all_closed_past_the_idle_limit():
    sessions, now = Sessions(), time.time()
    for browser in ("open", "closed", "closed-later"):
        sessions.sign_in(browser, SignIn(_token(3600), refresh_token="r", person="p" * 32))
    sessions.sign_in("pasted-expired", _token(-1))
    assert sessions.forget_idle({"open", "closed-later"}, idle_s=600, now=now) == ["pasted-expired"]
    assert sessions.forget_idle({"open", "closed-later"}, idle_s=600, now=now + 400) == []
    assert sessions.forget_idle({"open"}, idle_s=600, now=now + 700) == ["closed"]
    assert sessions.forget_idle({"open"}, idle_s=600, now=now + 1001) == ["closed-later"]
    assert [browser for browser, _ in sessions.from_provider()] == ["open"]


def test_sso_last_sites_are_kept_by_pseudonym_only_and_survive_a_restart(tmp_path):
    key = b"k" * 32
    person = pseudonym(key, "https://idp.example.test", "alice@example.test")
    assert person == pseudonym(key, "https://idp.example.test", "alice@example.test")
    assert person != pseudonym(key, "https://other-idp.example.test", "alice@example.test")
    assert person != pseudonym(b"x" * 32, "https://idp.example.test", "alice@example.test")
    path = tmp_path / "last-sites.json"
    LastSites(path).remember(person, "north")
    assert LastSites(path).get(person) == "north"
    assert "alice" not in path.read_text() and json.loads(path.read_text()) == {person: "north"}


def test_sso_lands_floor_staff_on_the_floor_and_everyone_else_on_the_flow_board():
    def principal(*roles: str) -> Principal:
        return Principal.from_token(_token(60, roles=list(roles), sites=["north"]))

    assert landing(principal("floor_staff")) == "/floor"
    assert landing(principal("floor_staff", "manager")) == "/"
    assert landing(principal("sre")) == "/" and landing(principal("admin")) == "/"


def test_sso_is_on_only_with_an_issuer_and_a_client():
    assert not OidcSection().configured
    assert not OidcSection(oidc_issuer="https://idp.example.test").configured
    assert OidcSection(oidc_issuer="https://idp.example.test", oidc_client_id="board").configured
