"""Extension `sigv4auth`: signs the HTTP exporters' requests with AWS Signature Version 4, for
AWS endpoints that take OTLP or remote write (X-Ray and CloudWatch OTLP endpoints, Amazon
Managed Service for Prometheus), as the OTel Collector's sigv4auth extension does.

Exporters name it in `auth: {authenticator: sigv4auth}`. Credentials: collector/aws/session.py
(the standard chain, optionally an assumed role); botocore signs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import Field

from collector.aws.session import aws_session
from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig

if TYPE_CHECKING:
    from botocore.credentials import Credentials

# Endpoint host prefixes whose signing name differs from the prefix.
_SIGNING_NAMES = {"aps-workspaces": "aps"}
# Headers the request may still change after signing (aiohttp sets them), never signed.
_UNSIGNED = frozenset({"user-agent", "content-length", "accept-encoding", "accept"})


class AssumeRoleConfig(ComponentConfig):
    arn: str = ""
    """Role to assume with STS before signing (default empty = sign with the chain's own
    credentials)."""
    session_name: str = "coldtail"
    """RoleSessionName of the AssumeRole call (default coldtail)."""
    sts_region: str = ""
    """Region of the STS endpoint (default empty = `region`, else the chain's region)."""


class Config(ComponentConfig):
    region: str = ""
    """Region the requests are signed for (default empty = the one in the endpoint's host
    name, like us-east-1 in xray.us-east-1.amazonaws.com, else AWS_REGION)."""
    service: str = ""
    """Signing name of the service (default empty = from the endpoint's host name: `xray`,
    `logs`, `aps` for aps-workspaces, ...)."""
    assume_role: AssumeRoleConfig = Field(default_factory=AssumeRoleConfig)
    """A role whose credentials sign instead."""


def signing_scope(url: str, config: Config, default_region: str | None) -> tuple[str, str]:
    """(service, region) a request to `url` is signed for; ValueError when neither the
    config nor the host name (`<service>.<region>.amazonaws.com`) says."""
    labels = (urlsplit(url).hostname or "").split(".")
    aws_host = len(labels) >= 4 and labels[-2] == "amazonaws"
    service = config.service or (_SIGNING_NAMES.get(labels[0], labels[0]) if aws_host else "")
    region = config.region or (labels[1] if aws_host else "") or default_region or ""
    if not service or not region:
        raise ValueError(
            f"sigv4auth cannot tell the service and region of {url}: set service and region"
        )
    return service, region


class SigV4Auth:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger
        self._credentials: Credentials | None = None
        self._region: str | None = None

    async def start(self, host) -> None:
        # botocore resolves credentials with blocking I/O (container endpoint, IMDS, STS).
        self._credentials, self._region = await asyncio.to_thread(self._resolve)

    def _resolve(self) -> tuple[Credentials, str | None]:
        role = self.config.assume_role
        session = aws_session(self.config.region, role.arn, role.session_name, role.sts_region)
        credentials = session.get_credentials()
        assert credentials is not None  # aws_session raises without
        return credentials, session.get_config_variable("region")

    async def shutdown(self) -> None:
        self._credentials = None

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        """Authorization, X-Amz-Date and (for temporary credentials) X-Amz-Security-Token
        over `method`, `url`, the other `headers` and `body`."""
        from botocore.auth import SigV4Auth as Signer
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:
            raise RuntimeError("sigv4auth is not started")
        service, region = signing_scope(url, self.config, self._region)
        # Refreshing expiring credentials may call an endpoint: off the event loop.
        frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        signed = {k: v for k, v in headers.items() if k.lower() not in _UNSIGNED}
        request = AWSRequest(method=method, url=url, data=body, headers=signed)
        Signer(frozen, service, region).add_auth(request)
        added = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")
        return {name: request.headers[name] for name in added if name in request.headers}


factory = Factory(
    kind=Kind.EXTENSION,
    type="sigv4auth",
    config=Config,
    create=SigV4Auth,
    signals={},
    description="Signs the HTTP exporters' requests with AWS Signature Version 4.",
)
