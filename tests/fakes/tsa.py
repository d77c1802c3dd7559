"""A real RFC 3161 time-stamping service on 127.0.0.1 for the tests: `openssl ts -reply`
behind a small HTTP server, with a time-stamping certificate from a root made here.

    with running_tsa(folder) as tsa:
        ... tsa_url=tsa.url ...; trust tsa.root as well as the signing root
"""

import datetime as dt
import http.server
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fakes.c2pa_ca import key_usage

_CONFIG = """\
[ tsa ]
default_tsa = test_tsa
[ test_tsa ]
serial = {serial}
crypto_device = builtin
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


@dataclass(frozen=True)
class TimeStamping:
    url: str
    root: Path
    """The root that issued the time-stamping certificate (PEM): trust it to accept
    the time."""
    requests: list[int]
    """Each request's size in bytes, as it came."""


@contextmanager
def running_tsa(folder: Path) -> Iterator[TimeStamping]:
    folder.mkdir(parents=True, exist_ok=True)
    root, cert, key = _credentials(folder)
    config = folder / "tsa.cnf"
    config.write_text(_CONFIG.format(serial=folder / "serial"))
    (folder / "serial").write_text("01\n")
    requests: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            requests.append(len(query))
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                asked, answer = Path(scratch) / "q.tsq", Path(scratch) / "r.tsr"
                asked.write_bytes(query)
                subprocess.run(
                    [
                        "openssl",
                        "ts",
                        "-reply",
                        "-queryfile",
                        str(asked),
                        "-config",
                        str(config),
                        "-inkey",
                        str(key),
                        "-signer",
                        str(cert),
                        "-chain",
                        str(root),
                        "-out",
                        str(answer),
                    ],
                    capture_output=True,
                    check=True,
                    timeout=30,
                )
                reply = answer.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TimeStamping(f"http://127.0.0.1:{server.server_address[1]}/", root, requests)
    finally:
        server.shutdown()
        server.server_close()


def _credentials(folder: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name("imagegate test time-stamping root")

    def builder(subject: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject) if subject else root_name)
            .issuer_name(root_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
        )

    root = (
        builder("", root_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(signature=False, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    tsa = (
        builder("imagegate test time-stamping", tsa_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signature=True, cert_sign=False), critical=True)
        # RFC 3161: the time-stamping purpose, alone and critical.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    paths = folder / "tsa-root.pem", folder / "tsa.pem", folder / "tsa.key"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        tsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
