"""A local HTTP endpoint that signs what it receives with AWS Signature Version 4 and forwards
it to an AWS service, X-Ray by default, so that applications need no AWS credentials: the X-Ray
SDKs fetch sampling rules and report sampling statistics through it (POST /GetSamplingRules,
/SamplingTargets, unsigned), as they do through the X-Ray daemon's TCP port. Used by the
`awsproxy` extension and the `awsxray` receiver's `proxy_server`.

Credentials come from collector/aws/session.py (the standard chain, optionally an assumed
role), resolved in the background at start so that the collector starts at once even where
resolving is slow or fails: until it succeeds, or when it failed, requests are answered 502
with the reason, and the SDKs fall back to their local sampling rules.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from pydantic import Field

from collector.aws.session import aws_session
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.endpoints import bound_port, split_endpoint

if TYPE_CHECKING:
    import logging

    from botocore.credentials import Credentials

_MAX_BODY = 1 << 20  # sampling requests are a few KB
_TIMEOUT_S = 10.0
# Request headers that describe the hop or the old signature, not the request.
_DROPPED = frozenset(
    {
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "accept-encoding",
        "keep-alive",
        "proxy-authorization",
    }
)
_RELAYED = ("Content-Type", "x-amzn-RequestId", "x-amzn-ErrorType")


class ProxyTlsConfig(ComponentConfig):
    insecure: bool = False
    """Skip verifying the AWS endpoint's certificate (default false); for tests only."""
    server_name_override: str = ""
    """Name the AWS endpoint's certificate is verified against (default empty = its host)."""


class SigningProxyConfig(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:2000"
    """TCP address the proxy listens on, where the X-Ray SDKs look for the X-Ray daemon
    (default 127.0.0.1:2000)."""
    proxy_address: str = ""
    """HTTP proxy the requests to AWS go through, such as a NAT gateway's (default empty =
    direct)."""
    tls: ProxyTlsConfig = Field(default_factory=ProxyTlsConfig)
    """TLS towards the AWS endpoint."""
    region: str = ""
    """Region of the AWS endpoint (default empty = AWS_REGION or the shared config's)."""
    role_arn: str = ""
    """Role to assume with STS for the forwarded calls (default empty = the credential chain's
    own)."""
    aws_endpoint: str = ""
    """URL the requests are forwarded to (default empty = the service's endpoint in the
    region)."""
    local_mode: bool = False
    """Accepted for compatibility with ADOT configs: the region is never read from instance
    metadata, so it has no effect. Default false."""
    service_name: str = "xray"
    """Signing name of the AWS service forwarded to (default xray)."""


class _Target:
    """Where and how requests go once credentials are resolved."""

    def __init__(self, credentials: Credentials, region: str, url: str) -> None:
        self.credentials = credentials
        self.region = region
        self.url = url.rstrip("/")


class SigningProxy:
    def __init__(
        self, config: SigningProxyConfig, log: logging.Logger | logging.LoggerAdapter
    ) -> None:
        self.config = config
        self.log = log
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._resolving: asyncio.Task[_Target] | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_endpoint(self.config.endpoint)
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await self.shutdown()
            raise OSError(f"cannot listen on {self.config.endpoint}: {e.strerror}") from None
        self.endpoint = f"{host}:{bound_port(site)}"
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S), auto_decompress=False
        )
        self._resolving = asyncio.create_task(asyncio.to_thread(self._resolve))
        self._resolving.add_done_callback(self._resolved)

    async def shutdown(self) -> None:
        if self._resolving is not None:
            self._resolving.cancel()
            self._resolving = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    def _resolve(self) -> _Target:
        cfg = self.config
        session = aws_session(cfg.region, cfg.role_arn)
        credentials = session.get_credentials()
        assert credentials is not None  # aws_session raises without
        region = session.get_config_variable("region")
        if not region:
            raise ValueError("no AWS region: set region or AWS_REGION")
        url = cfg.aws_endpoint
        if not url:
            client = session.create_client(cfg.service_name, region_name=region)
            url = client.meta.endpoint_url
        return _Target(credentials, region, url)

    def _resolved(self, task: asyncio.Task[_Target]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.log.warning(
                "AWS signing proxy has no credentials; requests will be answered 502",
                extra={"kv": {"endpoint": self.endpoint, "error": str(error)}},
            )
        else:
            target = task.result()
            self.log.info(
                "AWS signing proxy listening",
                extra={"kv": {"endpoint": self.endpoint, "forwards_to": target.url}},
            )

    async def _forward(self, request: web.Request) -> web.Response:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._resolving is None or self._http is None:
            return web.Response(status=503, text="the proxy is stopping")
        try:
            target = await asyncio.shield(self._resolving)
        except Exception as e:
            return web.Response(status=502, text=f"no AWS credentials for the proxy: {e}")
        body = await request.read()
        url = target.url + request.rel_url.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        # Refreshing expiring credentials may call an endpoint: off the event loop.
        frozen = await asyncio.to_thread(target.credentials.get_frozen_credentials)
        signed = AWSRequest(method=request.method, url=url, data=body, headers=headers)
        SigV4Auth(frozen, self.config.service_name, target.region).add_auth(signed)
        try:
            async with self._http.request(
                request.method,
                url,
                data=body,
                headers=dict(signed.headers.items()),
                proxy=self.config.proxy_address or None,
                ssl=not self.config.tls.insecure,
                server_hostname=self.config.tls.server_name_override or None,
            ) as answer:
                content = await answer.read()
                relayed = {h: answer.headers[h] for h in _RELAYED if h in answer.headers}
                return web.Response(status=answer.status, body=content, headers=relayed)
        except (aiohttp.ClientError, TimeoutError) as e:
            self.log.warning(
                "AWS signing proxy could not reach AWS",
                extra={"kv": {"url": url, "error": str(e) or type(e).__name__}},
            )
            return web.Response(status=502, text=f"could not reach {target.url}: {e}")
