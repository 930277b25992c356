"""awsproxy: unsigned requests, as the X-Ray SDKs send them to the daemon, go to AWS signed
with SigV4 by the collector's credentials, checked by an endpoint that recomputes every
signature; AWS's answer comes back unchanged."""

import asyncio

import aiohttp
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from collector.core.component import Kind
from collector.extensions import awsproxy
from tests.support.aws import isolate
from tests.support.components import make_settings
from tests.support.process import free_port
from tests.support.sigv4 import SigV4Endpoint

TARGETS = {
    "SamplingTargetDocuments": [
        {"RuleName": "checkout-orders", "FixedRate": 0.1, "ReservoirQuota": 2, "Interval": 10}
    ],
    "LastRuleModification": 1.7e9,
    "UnprocessedStatistics": [],
}


@pytest.fixture
def temporary_credentials(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path, credentials=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "temporary-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")


def unsigned_xray(endpoint: str):
    """An X-Ray client that signs nothing, as the X-Ray SDKs' sampling client."""
    return botocore.session.Session().create_client(
        "xray",
        region_name="us-west-2",
        endpoint_url=f"http://{endpoint}",
        config=BotoConfig(signature_version=UNSIGNED),
    )


async def test_an_unsigned_call_reaches_x_ray_signed_with_the_session_token(
    temporary_credentials,
):
    keys = {"ASIATEMPORARY": ("temporary-secret", "session-token")}
    async with SigV4Endpoint(keys, {"/SamplingTargets": TARGETS}) as xray:
        config = awsproxy.Config(endpoint="127.0.0.1:0", aws_endpoint=xray.url)
        extension = awsproxy.factory.create(make_settings(Kind.EXTENSION, "awsproxy"), config)
        await extension.start(None)
        try:
            client = unsigned_xray(extension.proxy.endpoint)
            answer = await asyncio.to_thread(
                client.get_sampling_targets,
                SamplingStatisticsDocuments=[
                    {
                        "RuleName": "checkout-orders",
                        "ClientID": "0123456789abcdef01234567",
                        "Timestamp": 1.7e9,
                        "RequestCount": 10,
                        "SampledCount": 2,
                        "BorrowCount": 0,
                    }
                ],
            )
        finally:
            await extension.shutdown()
    assert xray.refused == []
    [(method, path, headers, body)] = xray.accepted
    assert (method, path) == ("POST", "/SamplingTargets")
    assert headers["X-Amz-Security-Token"] == "session-token"
    assert b'"RequestCount": 10' in body or b'"RequestCount":10' in body
    # Signed for the collector's region, whatever region the application's client named.
    assert xray.scopes == [("xray", "ap-southeast-2")]
    [target] = answer["SamplingTargetDocuments"]
    assert (target["RuleName"], target["FixedRate"]) == ("checkout-orders", 0.1)


async def test_an_unreachable_aws_endpoint_is_a_502_naming_it(temporary_credentials):
    url = f"http://127.0.0.1:{free_port()}"
    config = awsproxy.Config(endpoint="127.0.0.1:0", aws_endpoint=url)
    extension = awsproxy.factory.create(make_settings(Kind.EXTENSION, "awsproxy"), config)
    await extension.start(None)
    try:
        target = f"http://{extension.proxy.endpoint}/GetSamplingRules"
        async with aiohttp.ClientSession() as http, http.post(target, data=b"{}") as answer:
            status, text = answer.status, await answer.text()
    finally:
        await extension.shutdown()
    assert status == 502 and url in text
