"""The OTLP receiver over TLS and mutual TLS with certificates made here (trustme), and behind
the bearertokenauth extension: wrong or missing credentials are refused on gRPC
(UNAUTHENTICATED) and HTTP (401), the token never shows in the logs, and coldtail's own OTLP/HTTP
exporter sends it."""

import asyncio
import base64
import hashlib
import logging
import os
import ssl
from pathlib import Path

import aiohttp
import bcrypt
import grpc
import pytest
import trustme
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from collector.core.component import ComponentID, Kind
from collector.core.signals import Signal
from collector.exporters import otlphttp, prometheus
from collector.extensions import basicauth, bearertokenauth, health_check
from collector.receivers.otlp import Config, OtlpReceiver
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

TOKEN = "t0ken-that-must-never-be-logged"
PROTOBUF = "application/x-protobuf"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca, tmp_path) -> dict[str, str]:
    """PEM files: the CA, the server's certificate for 127.0.0.1 and a client certificate."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example")
    files = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = str(path)
    return paths


def tls(pki: dict[str, str], mutual: bool = False) -> dict:
    config = {"cert_file": pki["server_cert"], "key_file": pki["server_key"]}
    return {**config, "client_ca_file": pki["ca"]} if mutual else config


async def started(
    protocols: dict, extensions: dict | None = None
) -> tuple[OtlpReceiver, SinkConsumer]:
    sink = SinkConsumer()
    config = Config.model_validate({"protocols": protocols})
    receiver = OtlpReceiver(make_settings("receiver", "otlp"), config, {Signal.TRACES: sink})
    await receiver.start(StaticHost(extensions=extensions or {}))
    return receiver, sink


def client_context(pki: dict[str, str], certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if certificate:
        context.load_cert_chain(pki["client_cert"], pki["client_key"])
    return context


async def post(url: str, context: ssl.SSLContext | None = None, **headers: str) -> int:
    body = make_traces(2).SerializeToString()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url, data=body, headers={"Content-Type": PROTOBUF, **headers}, ssl=context or False
        ) as response,
    ):
        return response.status


async def exported(endpoint: str, credentials=None, metadata=()) -> grpc.StatusCode:
    """The status of one export with the synchronous client, off the event loop the receiver
    runs on."""
    return await asyncio.to_thread(grpc_export, endpoint, credentials, metadata)


def grpc_export(endpoint: str, credentials=None, metadata=()) -> grpc.StatusCode:
    channel = (
        grpc.secure_channel(endpoint, credentials)
        if credentials
        else grpc.insecure_channel(endpoint)
    )
    with channel:
        try:
            TraceServiceStub(channel).Export(make_traces(2), metadata=metadata, timeout=5)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


async def test_http_over_tls_accepts_a_client_that_trusts_the_ca_and_refuses_plaintext(pki):
    receiver, sink = await started({"http": {"endpoint": "127.0.0.1:0", "tls": tls(pki)}})
    try:
        url = f"https://{receiver.http_endpoint}/v1/traces"
        assert await post(url, client_context(pki, certificate=False)) == 200
        with pytest.raises(aiohttp.ClientError):
            await post(url.replace("https:", "http:"))
    finally:
        await receiver.shutdown()
    assert sink.item_count == 2


async def test_mutual_tls_refuses_a_client_without_a_certificate_on_http_and_grpc(pki):
    both = {"endpoint": "127.0.0.1:0", "tls": tls(pki, mutual=True)}
    receiver, sink = await started({"http": both, "grpc": both})
    try:
        url = f"https://{receiver.http_endpoint}/v1/traces"
        with pytest.raises(aiohttp.ClientError):
            await post(url, client_context(pki, certificate=False))
        assert await post(url, client_context(pki, certificate=True)) == 200

        ca = Path(pki["ca"]).read_bytes()
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        with_certificate = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=Path(pki["client_key"]).read_bytes(),
            certificate_chain=Path(pki["client_cert"]).read_bytes(),
        )
        assert await exported(receiver.grpc_endpoint, anonymous) == grpc.StatusCode.UNAVAILABLE
        assert await exported(receiver.grpc_endpoint, with_certificate) == grpc.StatusCode.OK
    finally:
        await receiver.shutdown()
    assert sink.item_count == 4


async def test_a_certificate_renewed_in_place_is_served_after_reload_interval(pki):
    """Both listeners read changed certificate files again: once the files hold a certificate
    from another CA, a client trusting only that CA connects over HTTP and gRPC, and one
    trusting only the first no longer does."""
    listener = {"endpoint": "127.0.0.1:0", "tls": {**tls(pki), "reload_interval": "100ms"}}
    receiver, sink = await started({"http": listener, "grpc": listener})
    url = f"https://{receiver.http_endpoint}/v1/traces"
    old_ca = Path(pki["ca"]).read_bytes()
    new_ca = trustme.CA()
    try:
        assert await post(url, client_context(pki, certificate=False)) == 200
        old = grpc.ssl_channel_credentials(root_certificates=old_ca)
        assert await exported(receiver.grpc_endpoint, old) == grpc.StatusCode.OK

        renewed = new_ca.issue_cert("127.0.0.1", "localhost")
        # Key first, then certificate: a look between the two fails and is tried again.
        renewed.private_key_pem.write_to_path(pki["server_key"])
        renewed.cert_chain_pems[0].write_to_path(pki["server_cert"])
        os.utime(pki["server_cert"], (1, 1))  # a stamp unlike the first, however fast
        await asyncio.sleep(0.5)

        new_context = ssl.create_default_context(cadata=new_ca.cert_pem.bytes().decode())
        assert await post(url, new_context) == 200
        with pytest.raises(aiohttp.ClientError):
            await post(url, client_context(pki, certificate=False))
        new = grpc.ssl_channel_credentials(root_certificates=new_ca.cert_pem.bytes())
        assert await exported(receiver.grpc_endpoint, new) == grpc.StatusCode.OK
        assert await exported(receiver.grpc_endpoint, old) == grpc.StatusCode.UNAVAILABLE
    finally:
        await receiver.shutdown()
    assert sink.item_count == 8  # two exports over each protocol


async def test_a_half_written_certificate_keeps_the_old_one_and_is_read_again(pki):
    """A look at the files while they are half written fails and keeps the certificate in use;
    the next look loads them once they are whole, even when their times did not move again (as
    when a copy keeps the source's times)."""
    listener = {"endpoint": "127.0.0.1:0", "tls": {**tls(pki), "reload_interval": "100ms"}}
    receiver, sink = await started({"http": listener})
    url = f"https://{receiver.http_endpoint}/v1/traces"
    new_ca = trustme.CA()
    renewed = new_ca.issue_cert("127.0.0.1", "localhost")
    try:
        renewed.private_key_pem.write_to_path(pki["server_key"])
        Path(pki["server_cert"]).write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")
        for path in (pki["server_key"], pki["server_cert"]):
            os.utime(path, (2, 2))
        await asyncio.sleep(0.4)
        assert await post(url, client_context(pki, certificate=False)) == 200  # the old one

        renewed.cert_chain_pems[0].write_to_path(pki["server_cert"])
        os.utime(pki["server_cert"], (2, 2))
        await asyncio.sleep(0.4)
        new_context = ssl.create_default_context(cadata=new_ca.cert_pem.bytes().decode())
        assert await post(url, new_context) == 200
    finally:
        await receiver.shutdown()
    assert sink.item_count == 4


async def test_a_certificate_file_that_cannot_be_read_fails_the_start_naming_the_key(pki):
    broken = {"endpoint": "127.0.0.1:0", "tls": {**tls(pki), "key_file": "/nonexistent.pem"}}
    with pytest.raises(ValueError, match=r"tls::key_file: cannot read /nonexistent\.pem"):
        await started({"http": broken})


async def bearer(config: dict) -> bearertokenauth.BearerTokenAuth:
    extension = bearertokenauth.factory.create(
        make_settings(Kind.EXTENSION, "bearertokenauth"), bearertokenauth.Config(**config)
    )
    await extension.start(None)
    return extension


async def test_a_wrong_or_missing_token_is_refused_and_never_logged(caplog):
    extension = await bearer({"token": TOKEN})
    auth = {"authenticator": "bearertokenauth"}
    protocols = {
        "grpc": {"endpoint": "127.0.0.1:0", "auth": auth},
        "http": {"endpoint": "127.0.0.1:0", "auth": auth},
    }
    with caplog.at_level(logging.DEBUG):
        receiver, sink = await started(protocols, {ComponentID.parse("bearertokenauth"): extension})
        try:
            url = f"http://{receiver.http_endpoint}/v1/traces"
            assert await post(url) == 401
            assert await post(url, Authorization="Bearer wrong") == 401
            assert await post(url, Authorization=f"Bearer {TOKEN}") == 200
            endpoint = receiver.grpc_endpoint
            wrong = (("authorization", "Bearer wrong"),)
            right = (("authorization", f"Bearer {TOKEN}"),)
            assert await exported(endpoint) == grpc.StatusCode.UNAUTHENTICATED
            assert await exported(endpoint, metadata=wrong) == grpc.StatusCode.UNAUTHENTICATED
            assert await exported(endpoint, metadata=right) == grpc.StatusCode.OK
        finally:
            await receiver.shutdown()
    assert sink.item_count == 4
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(extension.config)


async def test_coldtail_s_exporter_sends_the_token_read_from_a_file_that_rotates(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("first-token\n")
    server_side = await bearer({"filename": str(secret)})
    client_side = await bearer({"filename": str(secret)})
    auth = {"authenticator": "bearertokenauth"}
    receiver, sink = await started(
        {"http": {"endpoint": "127.0.0.1:0", "auth": auth}},
        {ComponentID.parse("bearertokenauth"): server_side},
    )
    config = otlphttp.Config.model_validate(
        {
            "endpoint": f"http://{receiver.http_endpoint}",
            "auth": auth,
            "sending_queue": {"enabled": False},
        }
    )
    exporter = otlphttp.factory.create(
        make_settings(Kind.EXPORTER, "otlphttp"), config, Signal.TRACES
    )
    await exporter.start(StaticHost(extensions={ComponentID.parse("bearertokenauth"): client_side}))
    try:
        await exporter.consume(make_traces(1))
        url = f"http://{receiver.http_endpoint}/v1/traces"
        assert await post(url, Authorization="Bearer first-token") == 200
        secret.write_text("second-token\n")
        os.utime(secret, (1, 1))  # a different modification time, whatever the clock's grain
        assert await post(url, Authorization="Bearer first-token") == 401
        await exporter.consume(make_traces(1))  # the exporter reads the new token too
    finally:
        await exporter.shutdown()
        await receiver.shutdown()
    assert sink.item_count == 1 + 2 + 1


def test_the_token_is_a_secret_and_comes_from_exactly_one_place():
    config = bearertokenauth.Config(token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())
    with pytest.raises(ValueError, match="exactly one of token and filename"):
        bearertokenauth.Config()
    with pytest.raises(ValueError, match="exactly one of token and filename"):
        bearertokenauth.Config(token=TOKEN, filename="/run/secrets/token")


async def basic(config: dict) -> basicauth.BasicAuth:
    extension = basicauth.factory.create(
        make_settings(Kind.EXTENSION, "basicauth"), basicauth.Config.model_validate(config)
    )
    await extension.start(None)
    return extension


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth_takes_bcrypt_sha_and_plain_htpasswd_entries(tmp_path, caplog):
    htpasswd = tmp_path / ".htpasswd"
    bcrypted = bcrypt.hashpw(b"b-secret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    sha = base64.b64encode(hashlib.sha1(b"s-secret").digest()).decode()
    htpasswd.write_text(f"# agents\nbob:{bcrypted}\nsam:{{SHA}}{sha}\n")
    server_side = await basic({"htpasswd": {"file": str(htpasswd), "inline": "pat:p-secret"}})
    auth = {"authenticator": "basicauth"}
    with caplog.at_level(logging.DEBUG):
        receiver, sink = await started(
            {"http": {"endpoint": "127.0.0.1:0", "auth": auth}},
            {ComponentID.parse("basicauth"): server_side},
        )
        try:
            url = f"http://{receiver.http_endpoint}/v1/traces"
            for user, password in [("bob", "b-secret"), ("sam", "s-secret"), ("pat", "p-secret")]:
                assert await post(url, Authorization=basic_header(user, password)) == 200
            assert await post(url, Authorization=basic_header("bob", "s-secret")) == 401
            assert await post(url, Authorization=basic_header("eve", "p-secret")) == 401
            assert await post(url, Authorization="Basic not-base64!") == 401
            assert await post(url) == 401

            client_side = await basic({"client_auth": {"username": "pat", "password": "p-secret"}})
            config = otlphttp.Config.model_validate(
                {"endpoint": f"http://{receiver.http_endpoint}", "auth": auth,
                 "sending_queue": {"enabled": False}}
            )  # fmt: skip
            exporter = otlphttp.factory.create(
                make_settings(Kind.EXPORTER, "otlphttp"), config, Signal.TRACES
            )
            await exporter.start(
                StaticHost(extensions={ComponentID.parse("basicauth"): client_side})
            )
            await exporter.consume(make_traces(1))
            await exporter.shutdown()
        finally:
            await receiver.shutdown()
    assert sink.item_count == 3 * 2 + 1
    assert "b-secret" not in caplog.text and "p-secret" not in caplog.text


async def test_an_unsupported_htpasswd_hash_fails_the_start_naming_the_line():
    with pytest.raises(ValueError, match="inline line 2: unsupported hash 'apr1'"):
        await basic({"htpasswd": {"inline": "pat:p-secret\nbob:$apr1$xyz$abcdefgh"}})
    with pytest.raises(ValueError, match="exactly one of htpasswd"):
        basicauth.Config.model_validate({})


async def test_the_health_check_and_the_prometheus_endpoint_serve_tls(pki):
    health = health_check.factory.create(
        make_settings(Kind.EXTENSION, "health_check"),
        health_check.Config.model_validate({"endpoint": "127.0.0.1:0", "tls": tls(pki)}),
    )
    metrics = prometheus.factory.create(
        make_settings(Kind.EXPORTER, "prometheus"),
        prometheus.Config.model_validate({"endpoint": "127.0.0.1:0", "tls": tls(pki)}),
        Signal.METRICS,
    )
    await health.start(StaticHost())
    await metrics.start(StaticHost())
    try:
        context = client_context(pki, certificate=False)
        async with aiohttp.ClientSession() as http:
            for url in (f"https://{health.endpoint}/", f"https://{metrics.endpoint}/metrics"):
                async with http.get(url, ssl=context) as response:
                    assert response.status == 200, url
                with pytest.raises(aiohttp.ClientError):
                    await http.get(url.replace("https:", "http:"))
    finally:
        await health.shutdown()
        await metrics.shutdown()
