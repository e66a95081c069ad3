"""A private certificate authority for the NATS servers' TLS (docs/security.md, "Encryption on the bus").

`switchboard nats init --tls-names …` keeps one authority beside the issuer's seeds and gives the servers a
certificate from it (kept while it is good); Switchboard's processes and connector profiles trust that
authority alone (SWITCHBOARD_NATS_TLS_CA). PEM text in and out: where it is kept is the caller's business.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SLACK = datetime.timedelta(minutes=5)  # clocks of the servers and clients a little apart
# a host name as clients check it: dot-separated labels of letters, digits and inner hyphens
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


class Pem(NamedTuple):
    cert: str
    key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def new_authority(name: str = "Switchboard NATS", days: int = 3650) -> Pem:
    """A self-signed authority that may sign server certificates, and nothing below them."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{name} CA")).issuer_name(_name(f"{name} CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SLACK).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def still_good(cert_pem: str, authority: Pem, names: list[str], days: int = 30) -> bool:
    """Whether a server certificate is the authority's, for exactly `names`, and valid `days` more."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return False
    ca_cert = x509.load_pem_x509_certificate(authority.cert.encode())
    try:
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    held = {str(n.value) for n in sans}
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return held == {str(ipaddress.ip_address(n)) if _is_address(n) else n for n in names} \
        and left > datetime.timedelta(days=days)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def server_certificate(authority: Pem, names: list[str], days: int = 365) -> Pem:
    """A certificate for the servers reached as `names` (host names or addresses), signed by `authority`.
    Good for a server and for a client too: a cluster's nodes are both to each other on their routes."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    wrong = [n for n in names if not (_is_address(n) or (len(n) <= 253 and _HOST_NAME.fullmatch(n)))]
    if wrong:
        raise ValueError(f"not a host name or address: {', '.join(repr(n) for n in wrong)}")
    ca_cert = x509.load_pem_x509_certificate(authority.cert.encode())
    ca_key = serialization.load_pem_private_key(authority.key.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the authority's key is not an EC key")

    def subject_name(name: str) -> x509.GeneralName:
        return x509.IPAddress(ipaddress.ip_address(name)) if _is_address(name) else x509.DNSName(name)

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _SLACK).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([subject_name(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_id),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))
