"""Test certificates made by ``scripts/make-test-certs.sh`` (the script is under test too).

``tls_certs`` (session fixture): the directory with ca.pem, node.pem/key, upstream.pem/key,
ap.pem/key and stranger.pem/key (signed by another CA). Import it into a conftest:
``from tests.tlscerts import tls_certs  # noqa: F401``. ``issue()`` signs one more with ca.key.
"""
from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make-test-certs.sh"


def make_test_certs(directory: Path) -> Path:
    subprocess.run(["sh", str(SCRIPT), str(directory)], check=True, capture_output=True, timeout=60)
    return directory


def issue(certs: Path, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
          uris: tuple[str, ...] = ()) -> Path:
    """``name``.pem / ``name``.key in ``certs``, signed by its ca.pem/ca.key, with these SANs."""
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = ([x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            + [x509.UniformResourceIdentifier(u) for u in uris])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH,
                                                  x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    (certs / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (certs / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certs / f"{name}.pem"


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_certs(tmp_path_factory.mktemp("certs"))
