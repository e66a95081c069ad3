"""The claims map (SWITCHBOARD_CLAIMS_MAP): a provider's groups and roles become Switchboard roles held at
their own sites, the same for the dashboard and the backend; and a backend verifying an identity
provider's tokens (JWKS) acts on them: a role only at its own sites, unknown groups ignored, no mapped
role a clear 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from backend.auth import NO_ROLE, Principal, principal_from_claims
from dashboard.session import Principal as BoardPrincipal
from switchboard.claims_map import ClaimsMapError, load_claims_map, parse_claims_map
from tests.support.backends import start_backend
from tests.support.fallbacks import start
from tests.test_jwks import AUDIENCE, ISSUER, Jwks

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"

MAP = """
claims = ["groups", "realm_access.roles"]

[groups."branch-north-floor"]
roles = ["floor_staff"]
sites = ["north"]

[groups."branch-south-managers"]
roles = ["manager"]
sites = ["south"]

[groups."branch-east-managers"]
roles = ["manager"]
sites = ["east"]

[groups."ops"]
roles = ["sre"]
sites = ["*"]
"""


def test_claims_map_holds_each_role_at_its_own_sites_and_ignores_unknown_groups():
    claims_map = parse_claims_map(MAP)
    claims = {"sub": "p1", "groups": ["branch-north-floor", "branch-south-managers", "vpn-users"]}
    assert claims_map.grants(claims) == {"floor_staff": frozenset({"north"}), "manager": frozenset({"south"})}
    principal = principal_from_claims(claims, claims_map=claims_map)
    assert principal.roles == {"floor_staff", "manager"} and principal.sites == frozenset({"north", "south"})
    # acting for a floor route: floor_staff's sites only; for a read route: every site of a reading role
    assert principal.acting_as(frozenset({"floor_staff", "sre"})).sites == frozenset({"north"})
    assert principal.acting_as(frozenset({"manager", "floor_staff"})).sites == frozenset({"north", "south"})
    assert principal.acting_as(frozenset({"manager"})).sites == frozenset({"south"})


def test_claims_map_reads_dotted_paths_merges_sites_of_one_role_and_star_means_every_site():
    claims_map = parse_claims_map(MAP)
    keycloak = {"sub": "p2", "realm_access": {"roles": ["branch-south-managers", "offline_access"]},
                "groups": ["branch-east-managers"]}
    assert claims_map.grants(keycloak) == {"manager": frozenset({"south", "east"})}
    everywhere = principal_from_claims({"sub": "p3", "groups": ["ops", "branch-north-floor"]},
                                       claims_map=claims_map)
    assert everywhere.sites is None and everywhere.grants["floor_staff"] == frozenset({"north"})
    assert everywhere.acting_as(frozenset({"floor_staff", "sre"})).sites is None, "sre acts at every site"
    assert everywhere.acting_as(frozenset({"floor_staff"})).sites == frozenset({"north"})
    # a claim holding one name as a string counts; a claim of another shape gives nothing
    assert claims_map.grants({"groups": "ops"}) == {"sre": None}
    assert claims_map.grants({"groups": {"ops": True}, "realm_access": "ops"}) == {}


def test_claims_map_ignores_the_tokens_own_roles_and_sites_claims():
    claims_map = parse_claims_map(MAP)
    principal = principal_from_claims({"sub": "p4", "roles": ["admin"], "sites": "*", "groups": ["nothing"]},
                                      claims_map=claims_map)
    assert principal.roles == frozenset() and principal.sites == frozenset()


def test_without_a_claims_map_flat_roles_and_sites_claims_still_hold():
    principal = principal_from_claims({"sub": "p5", "roles": ["manager", "floor_staff", "other-app"],
                                       "sites": ["north", "south"]})
    assert principal.roles == {"manager", "floor_staff"}
    assert principal.acting_as(frozenset({"floor_staff"})).sites == frozenset({"north", "south"})
    old_style = Principal(sub="x", roles=frozenset({"sre"}), sites=None)  # built in code, no grants
    assert old_style.acting_as(frozenset({"sre"})).sites is None


def test_the_dashboard_reads_a_token_through_the_same_map():
    claims_map = parse_claims_map(MAP)
    token = jwt.encode({"sub": "p6", "groups": ["branch-north-floor", "branch-south-managers"],
                        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())},
                       "fake-key-not-verified-by-the-board-0000000000", algorithm="HS256")
    principal = BoardPrincipal.from_token(token, claims_map)
    assert principal.sites == ("north", "south") and principal.may_read
    assert principal.may_at("north", "floor_staff") and not principal.may_at("south", "floor_staff")
    assert principal.may_at("south", "manager") and not principal.may_at("north", "manager")


@pytest.mark.parametrize(("text", "problem"), [
    ('[groups.a]\nroles = ["boss"]\nsites = ["north"]', "grants ['boss']"),
    ('[groups.a]\nroles = []\nsites = ["north"]', "grants no role"),
    ('[groups.a]\nroles = ["manager"]\nsites = []', "names no site"),
    ('claims = []', "at least one claim"),
    ('[groups.a]\nroles = ["manager"]\nsites = ["north"]\nsite = "x"', "unknown field"),
    ('claims = "groups', "claims map"),
])
def test_a_claims_map_that_cannot_be_used_is_refused_with_its_reason(text, problem):
    with pytest.raises(ClaimsMapError, match=problem.replace("[", r"\[")):
        parse_claims_map(text)


def test_the_documented_example_maps_load():
    keycloak = load_claims_map(EXAMPLES / "claims-map-keycloak.toml")
    assert keycloak.grants({"groups": ["/ignored-path", "branch-north-floor"],
                            "realm_access": {"roles": ["switchboard-sre"]}}) == {
        "floor_staff": frozenset({"north"}), "sre": None}
    entra = load_claims_map(EXAMPLES / "claims-map-entra.toml")
    assert entra.grants({"roles": ["Branch.South.Manager"]}) == {"manager": frozenset({"south"})}


@pytest.fixture
def mapped_backend(settings, workdir, uid):
    jwks = Jwks()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish("k1", key, "RS256")
    # sites of this test's own: the fallback it starts touches no other test's
    (workdir / "claims-map.toml").write_text(MAP.replace('"north"', f'"north-{uid}"')
                                             .replace('"south"', f'"south-{uid}"'))
    env = {"SWITCHBOARD_JWKS_URL": jwks.url, "SWITCHBOARD_JWT_ISSUER": ISSUER,
           "SWITCHBOARD_JWT_AUDIENCE": AUDIENCE, "SWITCHBOARD_CLAIMS_MAP": str(workdir / "claims-map.toml")}
    process = start_backend(settings, workdir / "backend-claims-map.log", env)
    yield process, key
    process.stop()
    jwks.server.shutdown()
    jwks.server.server_close()


def _signed(key: rsa.RSAPrivateKey, **claims: object) -> dict[str, str]:
    now = datetime.now(UTC)
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "iat": int(now.timestamp()),
                        "exp": int((now + timedelta(minutes=5)).timestamp()), **claims}, key,
                       algorithm="RS256", headers={"kid": "k1"})
    return {"Authorization": f"Bearer {token}"}


async def test_a_jwks_backend_holds_mapped_roles_at_their_own_sites_only(mapped_backend, uid):
    process, key = mapped_backend
    north, south = f"north-{uid}", f"south-{uid}"
    person = _signed(key, sub="idp-person-claims-map", groups=["branch-north-floor", "branch-south-managers",
                                                                "unknown-group"])
    async with httpx.AsyncClient(base_url=process.url) as api:
        for site in (north, south):
            assert (await api.get("/api/v1/flow", params={"site": site}, headers=person)).status_code == 200
        outside = await api.get("/api/v1/flow", params={"site": "east"}, headers=person)
        assert outside.status_code == 403
        # manager at south is not floor_staff at south: a fallback there is refused, and nothing starts
        refused = await start(api, person, south)
        assert refused.status_code == 403, refused.text
        assert not (await api.get("/api/v1/fallbacks", params={"site": south, "status": "active"},
                                  headers=person)).json()["items"]
        # the same person's floor role holds at north
        started = await start(api, person, north)
        assert started.status_code == 201, started.text
        ended = await api.post(f"/api/v1/fallbacks/{started.json()['id']}/end", headers=person)
        assert ended.status_code in (200, 201), ended.text


async def test_a_jwks_backend_refuses_a_person_with_no_mapped_role_with_a_clear_reason(mapped_backend):
    process, key = mapped_backend
    nobody = _signed(key, sub="idp-person-no-role", groups=["vpn-users"], roles=["admin"], sites="*")
    async with httpx.AsyncClient(base_url=process.url) as api:
        answer = await api.get("/api/v1/flow", headers=nobody)
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"] == NO_ROLE
