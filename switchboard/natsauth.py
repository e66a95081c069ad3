"""Trust on the bus (CONTRACT section 8): NATS decentralised JWT auth, issued and revoked by Switchboard.

One operator signs two accounts: the system account (whose user pushes account updates to a running
server) and the SWITCHBOARD account that every Switchboard identity belongs to, with JetStream on.
Each identity is a user JWT signed by the SWITCHBOARD account, carrying exactly the subjects it may
publish and subscribe to. The server's `full` resolver keeps the accounts in a folder and accepts a
re-signed account pushed on `$SYS.REQ.CLAIMS.UPDATE`: revoking a connector adds its users' public keys
to the account's `revocations` and pushes it, and the server disconnects them without a restart.

The issuer's state (seeds, issued identities) lives in one folder, mode 0700, files 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nkeys

from switchboard.bus import connect
from switchboard.certificates import Pem, new_authority, server_certificate, still_good
from switchboard.commands import COMMANDS_STREAM, System, consumer_name
from switchboard.events import Code

SWITCHBOARD_ACCOUNT = "SWITCHBOARD"
SYSTEM_ACCOUNT = "SYS"
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
              "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
_CREDS_TEXT = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(secrets.token_bytes(32), prefix))


def encode_jwt(signer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (`ed25519-nkey`): what `nsc` writes, with the jti the hash of the claims as nats-io does."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": signer.public_key.decode(),
                              "name": name, "sub": subject, "nats": {**nats, "version": 2}}
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{body}.{_b64(signer.sign(f'{header}.{body}'.encode()))}"


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for reading what we issued)."""
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def creds_text(user_jwt: str, seed: bytes) -> str:
    return _CREDS_TEXT.format(jwt=user_jwt, seed=seed.decode())


def write_secret(path: Path, text: str) -> Path:
    """Write a file only its owner may read, never leaving it readable by others for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)
    return path


# --- what each identity may do ------------------------------------------------------------------


def inbox_prefix(system: str, sites: tuple[str, ...] = ()) -> str:
    """A connector's own reply inbox: it may subscribe there and nowhere else among replies. A profile limited
    to sites gets one of its sites' own, so that it never reads what a pull of another site's commands
    brought another profile of its system (its `.env` names it: SWITCHBOARD_CONNECTOR_INBOX)."""
    if not sites:
        return f"_INBOX_{system}"
    digest = hashlib.sha256("\n".join(sorted(set(sites))).encode()).hexdigest()[:16]
    return f"_INBOX_{system}@{digest}"


def backend_permissions() -> dict[str, Any]:
    return {"pub": {"allow": [">"]}, "sub": {"allow": [">"]}}


def connector_permissions(system: str, sites: tuple[str, ...] = ()) -> dict[str, Any]:
    """A connector of `system`: its events (only its sites' journey events when limited), its heartbeats,
    replies to the snapshot requests it was sent (only its sites' when limited), and its own commands through
    the backend's consumer (and its sites' consumers, for a system commanded per site, when limited)."""
    try:  # names become subject tokens: a `*` or `>` in one would widen the permission
        msgspec.convert(system, System)
        msgspec.convert(list(sites), list[Code])
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a system and site codes: {exc}") from exc
    consumers = [consumer_name(system), *(consumer_name(system, site) for site in sites)]
    # limited: its sites' subjects alone, heartbeats too (on its first site's), so that what it says of its
    # upstream is filed as its own (`<name>@<site>`) and never as another connector's; command results carry
    # the command's site (contract notes)
    events = [f"svc.events.{system}.*.*.{site}" for site in sites] if sites else [f"svc.events.{system}.>"]
    service = f"switchboard-{system}"
    # snapshot requests of its own sites only: a connector of one site must not answer (invent) another's
    snapshots = ([f"svc.snapshot.{system}.{site}" for site in sites] if sites
                 else [f"svc.snapshot.{system}", f"svc.snapshot.{system}.>"])
    return {
        "pub": {"allow": [
            *events,
            *(subject for consumer in consumers for subject in (
                f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS_STREAM}.{consumer}",
                f"$JS.API.CONSUMER.INFO.{COMMANDS_STREAM}.{consumer}",
                f"$JS.ACK.{COMMANDS_STREAM}.{consumer}.>")),
        ]},
        "sub": {"allow": [
            *snapshots, f"{inbox_prefix(system, sites)}.>",
            # nats.micro's discovery endpoints for its own snapshot service
            "$SRV.PING", "$SRV.INFO", "$SRV.STATS", f"$SRV.*.{service}", f"$SRV.*.{service}.>",
        ]},
        # answers only requests it received, once each, within a minute
        "resp": {"max": 1, "ttl": 60_000_000_000},
    }


# --- the issuer ---------------------------------------------------------------------------------


@dataclass
class Identity:
    name: str
    kind: str  # backend, connector, system
    public_key: str
    issued_at: int
    system: str | None = None
    sites: list[str] = field(default_factory=list)
    revoked: bool = False


class Issuer:
    """The operator and accounts of one NATS deployment, and the identities issued in it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.operator = self._key("operator", nkeys.PREFIX_BYTE_OPERATOR)
        self.system = self._key("system-account", nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = self._key("switchboard-account", nkeys.PREFIX_BYTE_ACCOUNT)
        self.route_password = self._secret("route-password", lambda: secrets.token_urlsafe(24))

    # state on disk

    def _secret(self, name: str, make: Any) -> str:
        path = self.folder / f"{name}.secret"
        if not path.exists():
            write_secret(path, make())
        return path.read_text().strip()

    @property
    def tls_ca(self) -> Path:
        """The certificate of the servers' TLS authority (there once `tls_authority` made it)."""
        return self.folder / "tls-ca.pem"

    def tls_authority(self) -> Pem:
        """The authority of the servers' TLS certificates, made on first use; its key stays here."""
        key = self.folder / "tls-ca-key.secret"
        if not key.exists():
            made = new_authority()
            self.tls_ca.write_text(made.cert)
            write_secret(key, made.key)
        return Pem(self.tls_ca.read_text(), key.read_text())

    def _key(self, name: str, prefix: int) -> nkeys.KeyPair:
        return nkeys.from_seed(self._secret(name, lambda: new_keypair(prefix).seed.decode()).encode())

    @property
    def _registry(self) -> Path:
        return self.folder / "identities.json"

    def identities(self) -> list[Identity]:
        if not self._registry.exists():
            return []
        return [Identity(**row) for row in json.loads(self._registry.read_text())]

    def _save(self, identities: list[Identity]) -> None:
        write_secret(self._registry, json.dumps([asdict(i) for i in identities], indent=1))

    # JWTs

    def operator_jwt(self) -> str:
        public = self.operator.public_key.decode()
        return encode_jwt(self.operator, public, "switchboard",
                          {"type": "operator", "system_account": self.system.public_key.decode()})

    def system_account_jwt(self) -> str:
        return encode_jwt(self.operator, self.system.public_key.decode(), SYSTEM_ACCOUNT, {
            "type": "account", "limits": {**_UNLIMITED, "mem_storage": 0, "disk_storage": 0, "streams": 0,
                                          "consumer": 0},
        })

    def account_jwt(self) -> str:
        revoked = {i.public_key: i.issued_at + 1 for i in self.identities()
                   if i.revoked and i.kind != "system"}
        nats: dict[str, Any] = {"type": "account", "limits": _UNLIMITED}
        if revoked:
            nats["revocations"] = revoked
        return encode_jwt(self.operator, self.account.public_key.decode(), SWITCHBOARD_ACCOUNT, nats)

    def server_config(self, resolver_dir: Path) -> str:
        """The nats-server configuration fragment: operator mode, full resolver, accounts preloaded."""
        preload = {self.system.public_key.decode(): self.system_account_jwt(),
                   self.account.public_key.decode(): self.account_jwt()}
        lines = [f"operator: {self.operator_jwt()}", f"system_account: {self.system.public_key.decode()}",
                 "resolver {", "  type: full", f"  dir: {json.dumps(str(resolver_dir))}",
                 "  allow_delete: false", "  interval: \"2m\"", "}", "resolver_preload {"]
        lines += [f"  {key}: {value}" for key, value in preload.items()]
        return "\n".join([*lines, "}", ""])

    def cluster_config(self, routes: list[str]) -> str:
        """The inside of a `cluster {}` block: the route user, and routes carrying its password (a node's
        route to itself is ignored, so every node may list them all). A node without it cannot join."""
        urls = ", ".join(f"nats-route://route:{self.route_password}@{route}" for route in routes)
        return (f"authorization {{\n  user: route\n  password: {json.dumps(self.route_password)}\n}}\n"
                f"routes: [{urls}]\n")

    # identities

    def _issue(self, signer: nkeys.KeyPair, name: str, kind: str, permissions: dict[str, Any], *,
               system: str | None = None, sites: tuple[str, ...] = ()) -> str:
        user = new_keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = encode_jwt(signer, user.public_key.decode(), name, {
            "type": "user", "subs": -1, "data": -1, "payload": -1, **permissions})
        identity = Identity(name=name, kind=kind, public_key=user.public_key.decode(), system=system,
                            issued_at=int(decode_jwt_claims(user_jwt)["iat"]), sites=list(sites))
        self._save([*self.identities(), identity])
        return creds_text(user_jwt, user.seed)

    def backend_creds(self, name: str = "backend") -> str:
        return self._issue(self.account, name, "backend", backend_permissions())

    def connector_creds(self, system: str, sites: tuple[str, ...] = ()) -> str:
        rights = connector_permissions(system, sites)
        return self._issue(self.account, f"connector-{system}", "connector", rights,
                           system=system, sites=sites)

    def system_creds(self) -> Path:
        """The credentials file of a user of the system account: it pushes account updates to the servers,
        and does nothing else there (no connection lists, no server reloads or kicks)."""
        return self._system_user("system.creds", "system", ["$SYS.REQ.CLAIMS.UPDATE"])

    def monitor_creds(self) -> Path:
        """A system account user that may only ping the servers for their state (`$SYS.REQ.SERVER.PING`,
        and `.CONNZ`, `.VARZ`...): what a monitoring tool needs, read-only."""
        return self._system_user("monitor.creds", "monitor",
                                 ["$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.>"])

    def _system_user(self, file: str, name: str, publish: list[str]) -> Path:
        path = self.folder / file
        if not path.exists():
            rights = {"pub": {"allow": publish}, "sub": {"allow": ["_INBOX.>"]}}
            write_secret(path, self._issue(self.system, name, "system", rights))
        return path

    def revoke(self, system: str) -> list[Identity]:
        """Mark every connector identity of `system` revoked; push `account_jwt()` for it to take effect."""
        identities = self.identities()
        revoked = [i for i in identities if i.kind == "connector" and i.system == system and not i.revoked]
        for identity in revoked:
            identity.revoked = True
        self._save(identities)
        return revoked

    def write_creds(self, path: Path, text: str) -> Path:
        return write_secret(path, text)


async def push_account(nats_url: str, issuer: Issuer, timeout: float = 5.0, *,
                       tls_ca: str | None = None) -> None:
    """Send the SWITCHBOARD account's current JWT to running servers (a cluster passes it on); `tls_ca`: their
    certificate authority, for TLS."""
    nc = await connect(nats_url, "switchboard-issuer", creds=str(issuer.system_creds()), tls_ca=tls_ca,
                       reconnect=False)
    try:
        reply = await nc.request("$SYS.REQ.CLAIMS.UPDATE", issuer.account_jwt().encode(), timeout=timeout)
        answer = json.loads(reply.data)
        if "error" in answer:
            raise RuntimeError(f"the server refused the account update: {answer['error']}")
    finally:
        await nc.close()


def init_deployment(issuer_dir: Path, server_dir: Path, *, resolver_dir: str, routes: list[str],
                    backend_creds: Path, tls_names: list[str] | None = None) -> list[Path]:
    """What a deployment's NATS servers and backends need, from the issuer in `issuer_dir` (made on first
    use): `auth.conf` (operator mode), `cluster.conf` (route auth) and `tls.conf` to include, and the
    backend's credentials. Run again, it rewrites the includes with the current account (its revocations)
    and keeps the credentials already issued. The paths written.

    With `tls_names` (the names and addresses clients and nodes reach the servers by), client connections
    and routes are TLS: the servers get a certificate from the issuer's authority (made once), kept while it
    is for those names and valid 30 days more, else issued anew (a node takes it at its next start or
    reload), which `tls.conf` and the routes use; the authority's certificate goes beside the backend's
    credentials as `nats-ca.pem` (SWITCHBOARD_NATS_TLS_CA). Clients must start TLS first (`handshake_first`).
    """
    issuer = Issuer(issuer_dir)
    server_dir = server_dir.resolve()
    cluster = issuer.cluster_config(routes)
    client_tls = "# no TLS: `switchboard nats init` ran without --tls-names\n"
    written = []
    if tls_names:
        authority = issuer.tls_authority()
        # the certificate and its key in one file, replaced whole: a node never reads one without the other
        server, ca = server_dir / "tls-server.pem", server_dir / "tls-ca.pem"
        if not (server.exists() and still_good(server.read_text(), authority, tls_names)):
            pem = server_certificate(authority, tls_names)
            written.append(write_secret(server.with_suffix(".new"), pem.cert + pem.key).replace(server))
        written += [write_secret(ca, authority.cert),
                    write_secret(backend_creds.parent / "nats-ca.pem", authority.cert)]
        pair = f"  cert_file: {json.dumps(str(server))}\n  key_file: {json.dumps(str(server))}\n"
        client_tls = f"tls {{\n{pair}  handshake_first: true\n}}\n"
        # each node is a client of the others on its routes: both sides show a certificate of the authority
        cluster += f"tls {{\n{pair}  ca_file: {json.dumps(str(ca))}\n  verify: true\n}}\n"
    written += [write_secret(server_dir / "auth.conf", issuer.server_config(Path(resolver_dir))),
                write_secret(server_dir / "cluster.conf", cluster),
                write_secret(server_dir / "tls.conf", client_tls)]
    if not backend_creds.exists():
        written.append(write_secret(backend_creds, issuer.backend_creds()))
    return written
