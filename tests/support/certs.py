"""Throwaway certificates for the TLS tests: a CA and leaves signed by it, made with openssl."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_ca(d: Path, name: str) -> None:
    openssl(
        d,
        *("req", "-x509", *EC, "-days", "2", "-subj", f"/CN={name}"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def make_leaf(d: Path, name: str, ca: str, sans: str) -> None:
    openssl(d, "req", *EC, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    (d / f"{name}.ext").write_text(
        f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        encoding="utf-8",
    )
    openssl(
        d,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"),
        *("-set_serial", str(secrets.randbits(62)), "-days", "2"),
        *("-out", f"{name}.pem", "-extfile", f"{name}.ext"),
    )
