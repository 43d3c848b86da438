"""TLS to the model server: a certificate authority made here with openssl, a model server that
serves TLS and requires a client certificate from it, and the runtime configured with
`model.tls` (the authority to trust, its client certificate and key). Without the client
certificate, or without the authority, start-up is refused with the reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from streamtools import fraud, kafka, paths, services

from flow import OUTPUT_TIMEOUT, START_FAILURE_TIMEOUT, read_while_running

COUNT = 200


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(directory: Path, name: str, ca: str, extensions: str) -> None:
    """``name``.key and ``name``.pem, signed by the authority ``ca``.pem/.key."""
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    key, csr, pem = (directory / f"{name}.{suffix}" for suffix in ("key", "csr", "pem"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / f"{ca}.pem"),
            "-CAkey", str(directory / f"{ca}.key"), "-CAcreateserial", "-days", "2",
            "-out", str(pem), "-extfile", str(ext))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from that CA; and
    a second CA the server has nothing to do with."""
    d = tmp_path_factory.mktemp("tls")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"), "-days", "2",
                "-subj", f"/CN=streaminfer test {ca}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    issue(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
          "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    issue(d, "client", "ca", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n")
    return d


@pytest.fixture(scope="module")
def tls_server(certificates, tmp_path_factory):
    d = certificates
    server = services.start_model_server(
        tmp_path_factory.mktemp("tls-server"),
        extra=["--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key"),
               "--tls-client-ca", str(d / "ca.pem")],
    )
    try:
        yield server
    finally:
        server.stop()


def test_records_are_scored_over_mutual_tls(broker, topics, overrides, start_runtime, certificates, tls_server):
    d = certificates
    runtime = start_runtime({
        **overrides,
        "model.endpoint": f"https://{tls_server.address}",
        "model.tls.ca": str(d / "ca.pem"),
        "model.tls.cert": str(d / "client.pem"),
        "model.tls.key": str(d / "client.key"),
    })
    inputs = fraud.input_records(7, COUNT)
    kafka.produce(broker.bootstrap, topics.input, [(r.key, r.value) for r in inputs])
    with kafka.TopicReader(broker.bootstrap, topics.output) as out:
        outputs = read_while_running(out, runtime, COUNT, OUTPUT_TIMEOUT)
    assert len(outputs) == COUNT, runtime.tail()


@pytest.mark.parametrize(
    "missing, expected",
    [
        # The server ends the handshake when no certificate comes; TLS 1.3 shows it only as a
        # connection closed mid-handshake.
        ("client certificate", "cannot reach the model server at https://127.0.0.1"),
        ("authority", "invalid peer certificate: UnknownIssuer"),
    ],
)
def test_start_up_is_refused_without_the_client_certificate_or_the_authority(
    missing, expected, overrides, start_runtime, certificates, tls_server
):
    d = certificates
    tls = {"model.tls.ca": str(d / "ca.pem")} if missing == "client certificate" else {
        "model.tls.ca": str(d / "other-ca.pem"),
        "model.tls.cert": str(d / "client.pem"),
        "model.tls.key": str(d / "client.key"),
    }
    runtime = start_runtime({**overrides, "model.endpoint": f"https://{tls_server.address}", **tls})
    status = runtime.wait(START_FAILURE_TIMEOUT)
    assert status == 1, runtime.tail()
    assert expected in runtime.log(), runtime.tail()


def test_tls_files_are_checked_with_the_config(overrides, start_runtime, certificates, tmp_path):
    """A key without its certificate, a file that is not PEM and TLS for a plain endpoint are
    all listed at once, before anything is started."""
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    runtime = start_runtime({
        **overrides,
        "model.tls.ca": str(not_pem),
        "model.tls.key": str(certificates / "client.key"),
    })
    assert runtime.wait(START_FAILURE_TIMEOUT) == 2, runtime.tail()
    log = runtime.log()
    for problem in ("model.tls.ca: model.tls applies to a model server reached over TLS",
                    "holds no PEM block", "model.tls.cert: required with key"):
        assert problem in log, log
    assert paths.FRAUD_CONFIG.name in log
