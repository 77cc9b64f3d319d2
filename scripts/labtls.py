"""The all-HTTPS lab's certificates (`scripts/lab up --https`): a throwaway CA made with `cryptography`,
and one leaf for 127.0.0.1, ::1 and localhost that every HTTPS daemon serves (appliances, steering,
playback), and how to trust the CA.

Strategy. Everything lives under STATE/tls and is kept across `up`s: the CA (ca.pem, its key ca.key,
mode 600) is made once, so a browser or NSS database told to trust it stays trusting; the leaf
(server.pem: the leaf then the CA, server.key) is issued again when missing, near its end or issued by
another CA. The served chain carries the CA, so Chromium's --ignore-certificate-errors-spki-list can
name the CA's key hash (a hash the browser matches against the chain the server sends) and that flag
outlives any leaf. The daemons and the lab's own clients trust the CA through SSL_CERT_FILE (OpenSSL's,
read by Python's default contexts, aiohttp's included, and by Prometheus): the lab talks only to loopback.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.util
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

NAMES = ("localhost", "127.0.0.1", "::1")
LEAF_DAYS = 90
RENEW_DAYS = 14  # a leaf with less left than this is issued again at `up`


@dataclass(frozen=True)
class LabTls:
    ca: Path  # the CA certificate: what clients trust (curl --cacert, SSL_CERT_FILE, NSS)
    chain: Path  # the leaf then the CA: what servers present
    key: Path  # the leaf's key
    spki_sha256: str  # base64 sha256 of the CA's SubjectPublicKeyInfo (Chromium's SPKI flag)

    def as_json(self) -> dict[str, str]:
        return {"ca": str(self.ca), "chain": str(self.chain), "key": str(self.key), "spki_sha256": self.spki_sha256}

    def env(self) -> dict[str, str]:
        """What a daemon of the lab needs in its environment to trust the others."""
        return {"SSL_CERT_FILE": str(self.ca)}


def ensure(directory: Path) -> LabTls:
    """The lab's CA and leaf under `directory`, made or renewed as needed."""
    if importlib.util.find_spec("cryptography") is None:  # the [test] extra, which scripts/setup installs
        raise SystemExit("lab: --https needs the `cryptography` package (bash scripts/setup installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca(directory)
    tls = LabTls(directory / "ca.pem", directory / "server.pem", directory / "server.key", _spki(ca_cert))
    if not _leaf_fresh(tls.chain, ca_cert):
        _issue_leaf(tls, ca_cert, ca_key)
    return tls


def _ca(directory: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return (x509.load_pem_x509_certificate(cert_path.read_bytes()),
                serialization.load_pem_private_key(key_path.read_bytes(), None))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"opencdn lab CA ({os.uname().nodename})")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), secret=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _leaf_fresh(chain: Path, ca_cert) -> bool:
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificate(chain.read_bytes())
    except (OSError, ValueError):
        return False
    left = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    key = chain.with_suffix(".key")
    return leaf.issuer == ca_cert.subject and left > dt.timedelta(days=RENEW_DAYS) and key.exists()


def _issue_leaf(tls: LabTls, ca_cert, ca_key) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) if not _is_ip(n) else x509.IPAddress(ipaddress.ip_address(n)) for n in NAMES]
    now = dt.datetime.now(dt.timezone.utc)
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(tls.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()), secret=True)
    _write(tls.chain, leaf.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))


def _spki(cert) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Whole or not at all (temp file + rename); a key is never readable by others, not even briefly."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def trust_help(tls: LabTls, page: str) -> str:
    """The banner's lines: how to trust the CA with curl, Chromium (this browser only) or NSS."""
    return f"""  https:       the appliances, steering and playback serve HTTPS, with a certificate of the lab's own CA:
    CA:         {tls.ca}   (kept in the state directory: trust it once)
    curl:       curl --cacert {tls.ca} {page}
    chromium:   chromium --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list={tls.spki_sha256} {page}
                (trusts the lab CA's key in that browser profile only)
    or NSS:     certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n "opencdn lab CA" -i {tls.ca}
                (Chromium and Firefox profiles using that database; certutil -D -n "opencdn lab CA" undoes it)"""
