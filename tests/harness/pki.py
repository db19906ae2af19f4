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


def _make_ca(pki: Pki, common_name: str, *extensions: str) -> None:
    """``ca.key`` and a self-signed ``ca.crt`` named ``common_name`` (extra ``-addext`` values appended)."""
    _key(pki.ca_key)
    added = [arg for ext in extensions for arg in ("-addext", ext)]
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
        f"/CN={common_name}",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        *added,
        cwd=pki.dir,
    )


def _sign(pki: Pki, name: str, subject: str, ext: str) -> None:
    """``name.key`` and ``name.crt`` for ``subject``, signed by the CA with the extensions ``ext``."""
    directory = pki.dir
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


_SERVER_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
)
_CLIENT_EXT = (
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
)


def make_pki(
    directory: Path, *, server_ips: list[str], server_dns: list[str], clients: dict[str, tuple[str, list[str]]]
) -> Pki:
    """Create a CA, a serving certificate ``apiserver`` and one client certificate per entry of
    ``clients`` (``name -> (common name, organizations)``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _make_ca(pki, "edgequant-test-ca")
    sans = ",".join([f"IP:{ip}" for ip in server_ips] + [f"DNS:{d}" for d in server_dns])
    _sign(pki, "apiserver", "/CN=kube-apiserver", f"{_SERVER_EXT}subjectAltName={sans}\n")
    for name, (cn, orgs) in clients.items():
        _sign(pki, name, "".join(f"/O={o}" for o in orgs) + f"/CN={cn}", _CLIENT_EXT)

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
    _make_ca(pki, ca_name, f"subjectAltName=DNS:{ca_name}")
    _openssl("rsa", "-in", "ca.key", "-traditional", "-out", "ca.key", cwd=directory)
    sans = ",".join([f"DNS:{d}" for d in server_dns] + [f"IP:{ip}" for ip in server_ips])
    _sign(pki, "server", f"/CN={server_dns[0]}", f"{_SERVER_EXT}subjectAltName={sans}\n")
    return pki
