"""A self-signed CA and serving certificate for the admission webhook when the operator runs outside a cluster
(the local rig, `make demo`); in a cluster the Helm chart provides them."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

#: a certificate with less than this left is replaced at start (it is valid for a year)
RENEW_BEFORE = dt.timedelta(days=30)


def expires(crt_path: Path) -> dt.datetime | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(crt_path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def ensure_self_signed(directory: Path, hosts: list[str], now: dt.datetime | None = None) -> tuple[Path, Path, Path]:
    """(ca.crt, tls.crt, tls.key) in `directory`, created once and reused while the hosts match and the certificate
    has more than RENEW_BEFORE left (else renewed: a year-old local webhook would otherwise stop admitting)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_path, crt_path, key_path, hosts_path = (directory / n for n in ("ca.crt", "tls.crt", "tls.key", "hosts"))
    current = dt.datetime.now(dt.UTC) if now is None else now
    valid_until = expires(crt_path) if crt_path.exists() else None
    if all(p.exists() for p in (ca_path, crt_path, key_path, hosts_path)) and \
            hosts_path.read_text() == ",".join(hosts) and valid_until is not None and \
            valid_until - current > RENEW_BEFORE:
        return ca_path, crt_path, key_path
    now = current - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moe-operator-webhook-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    hosts_path.write_text(",".join(hosts))
    return ca_path, crt_path, key_path
