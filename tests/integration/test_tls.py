"""TLS and mutual TLS between services when certificate paths are configured."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis.clients import open_channel
from chassis.server import ServiceApp
from services.inventory.main import SPEC
from stack.ports import free_port
from tests.conftest import Databases, NatsServer
from tests.integration.harness import settings_for

pytestmark = pytest.mark.integration


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> None:
    """A CA and two leaf certificates it signed: one per service."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("dwf test CA"))
        .issuer_name(_name("dwf test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca", ca_key, ca)
    for name in ("inventory", "order_gateway"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory / name, key, cert)


@pytest.fixture
async def mtls_app(
    databases: Databases, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[ServiceApp, Path]]:
    make_pki(tmp_path)
    settings = settings_for(
        "inventory",
        databases,
        nats_server,
        tls_cert_file=tmp_path / "inventory.crt",
        tls_key_file=tmp_path / "inventory.key",
        tls_ca_file=tmp_path / "ca.crt",
        health_port=free_port(),
    )
    app = ServiceApp(SPEC, settings)
    await app.start()
    yield app, tmp_path
    await app.stop()


async def _check(channel: grpc.aio.Channel) -> str:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=False
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def test_service_with_client_certificate_is_served(
    mtls_app: tuple[ServiceApp, Path], databases: Databases, nats_server: NatsServer
) -> None:
    app, pki = mtls_app
    client_settings = settings_for(
        "order_gateway",
        databases,
        nats_server,
        tls_cert_file=pki / "order_gateway.crt",
        tls_key_file=pki / "order_gateway.key",
        tls_ca_file=pki / "ca.crt",
    )
    async with open_channel(f"localhost:{app.bound_port}", client_settings) as channel:
        assert await _check(channel) in {"SERVING", "NOT_SERVING"}


async def test_client_without_certificate_is_refused(mtls_app: tuple[ServiceApp, Path]) -> None:
    app, pki = mtls_app
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{app.bound_port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(mtls_app: tuple[ServiceApp, Path]) -> None:
    app, _ = mtls_app
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(channel)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_plaintext_health_port_serves_probes_under_mtls(
    mtls_app: tuple[ServiceApp, Path],
) -> None:
    """kubelet gRPC probes cannot speak TLS: a health-only plaintext port answers them."""
    app, _ = mtls_app
    await app.wait_until_ready(20)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_health_port}") as channel:
        assert await _check(channel) == "SERVING"
        liveness = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=5
        )
        assert liveness.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as only_health:
            await channel.unary_unary("/dwf.inventory.v1.InventoryService/Reserve")(b"", timeout=5)
        assert only_health.value.code() is grpc.StatusCode.UNIMPLEMENTED
