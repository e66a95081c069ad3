"""A throwaway certificate authority for the TLS tests: a CA and a server certificate for 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from switchboard.certificates import new_authority, server_certificate
from switchboard.natsauth import write_secret
from tools.embedded import ServerCertificate


def issue_server_certificate(folder: Path, name: str = "switchboard-test") -> tuple[Path, ServerCertificate]:
    """A new authority and a certificate for 127.0.0.1 signed by it, written as PEM files in `folder`: the
    authority's certificate (what clients trust) and the server's."""
    authority = new_authority(name, days=1)
    pem = server_certificate(authority, ["127.0.0.1", "localhost"], days=1)
    ca = folder / "ca.pem"
    folder.mkdir(parents=True, exist_ok=True)
    ca.write_text(authority.cert)
    server = ServerCertificate(folder / "server.pem", folder / "server-key.pem")
    server.cert.write_text(pem.cert)
    write_secret(server.key, pem.key)
    return ca, server
