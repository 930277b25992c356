"""Extension `awsproxy`: a local endpoint that signs requests with AWS Signature Version 4 and
forwards them to an AWS service (X-Ray by default), so that the X-Ray SDKs' sampling requests
need no credentials in the application (collector/aws/signing_proxy.py)."""

from __future__ import annotations

from collector.aws.signing_proxy import SigningProxy, SigningProxyConfig
from collector.core.component import Factory, Host, Kind, Settings


class Config(SigningProxyConfig):
    pass


class AwsProxy:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.proxy = SigningProxy(config, settings.logger)

    async def start(self, host: Host) -> None:
        await self.proxy.start()

    async def shutdown(self) -> None:
        await self.proxy.shutdown()


factory = Factory(
    kind=Kind.EXTENSION,
    type="awsproxy",
    config=Config,
    create=AwsProxy,
    signals={},
    description=(
        "Signs requests with AWS Signature Version 4 and forwards them to AWS, for the X-Ray "
        "SDKs' sampling requests."
    ),
)
