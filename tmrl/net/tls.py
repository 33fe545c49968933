"""Self-signed TLS certificate for the relay (clients pin it): ``create_self_signed(cert, key, hosts)``.

Uses the ``cryptography`` package when installed, else the ``openssl`` command line tool.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tmrl.errors import ConfigError


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def create_self_signed(
    cert_path: Path, key_path: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1"), days: int = 3650
) -> None:
    """Write a new EC P-256 key (mode 0600) and a self-signed certificate valid for ``hosts``.

    Copy the certificate (never the key) to every worker / trainer machine and set ``RelayConfig.tls_cert``.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if not hosts:
        raise ConfigError("give at least one host name or IP address for the TLS certificate")
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _with_cryptography(cert_path, key_path, hosts, days)
    except ImportError:
        _with_openssl(cert_path, key_path, hosts, days)
    os.chmod(key_path, 0o600)


def _with_cryptography(cert_path: Path, key_path: Path, hosts: Sequence[str], days: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _with_openssl(cert_path: Path, key_path: Path, hosts: Sequence[str], days: int) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise ConfigError("creating a TLS certificate needs the 'cryptography' package or the openssl tool")
    san = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_key = Path(tmp, "key.pem")
        cmd = [
            exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(tmp_key), "-out", str(cert_path), "-days", str(days), "-subj", f"/CN={hosts[0]}",
            "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"openssl could not create the certificate: {proc.stderr.strip()[-300:]}")
        shutil.move(str(tmp_key), key_path)
