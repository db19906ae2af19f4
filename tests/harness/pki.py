"""Certificates and keys for the test control plane, made with the openssl command line tool.

Everything is throw-away: a CA, the kube-apiserver serving certificate, client certificates
(admin in system:masters, kube-controller-manager, kube-scheduler) and the service-account
signing key pair.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "3650"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path.name, cwd=path.parent)
    path.chmod(0o600)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def make_pki(
    directory: Path, *, server_ips: list[str], server_dns: list[str], clients: dict[str, tuple[str, list[str]]]
) -> Pki:
    """Create a CA, a serving certificate ``apiserver`` and one client certificate per entry of
    ``clients`` (``name -> (common name, organizations)``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _key(pki.ca_key)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        _DAYS,
        "-subj",
        "/CN=edgequant-test-ca",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=directory,
    )

    def sign(name: str, subject: str, ext: str) -> None:
        _key(pki.key(name))
        (directory / f"{name}.ext").write_text(ext)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            _DAYS,
            "-sha256",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
            cwd=directory,
        )

    sans = ",".join([f"IP:{ip}" for ip in server_ips] + [f"DNS:{d}" for d in server_dns])
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
    )
    for name, (cn, orgs) in clients.items():
        subject = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
        sign(
            name,
            subject,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )

    _key(pki.sa_key)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return pki


def make_webhook_pki(directory: Path, *, ca_name: str, server_dns: list[str], server_ips: list[str]) -> Pki:
    """A CA and a serving certificate ``server`` for a webhook server outside the API server.

    The CA carries ``ca_name`` as its common name and DNS name, and its key is RSA PKCS#1: what
    controllers that check and reuse their webhook CA from a Secret (cert-controller, as in
    Kueue) accept instead of making their own."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _key(pki.ca_key)
    _openssl("rsa", "-in", "ca.key", "-traditional", "-out", "ca.key", cwd=directory)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        _DAYS,
        "-subj",
        f"/CN={ca_name}",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-addext",
        f"subjectAltName=DNS:{ca_name}",
        cwd=directory,
    )
    _key(pki.key("server"))
    sans = ",".join([f"DNS:{d}" for d in server_dns] + [f"IP:{ip}" for ip in server_ips])
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"
    )
    _openssl("req", "-new", "-key", "server.key", "-subj", f"/CN={server_dns[0]}", "-out", "server.csr", cwd=directory)
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        _DAYS,
        "-sha256",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
        cwd=directory,
    )
    return pki
