"""A local EC2 Instance Metadata Service that enforces IMDSv2 as AWS documents it (instances
with HttpTokens=required): a session token from `PUT /latest/api/token` with
`X-aws-ec2-metadata-token-ttl-seconds` between 1 and 21600 (400 otherwise; 403 for a PUT
carrying X-Forwarded-For), then every GET with `X-aws-ec2-metadata-token` (401 without a valid,
unexpired one). It serves the instance identity document and meta-data/hostname.

    async with ImdsServer() as imds:
        os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
"""

from __future__ import annotations

import json
import secrets
import time

from aiohttp import web

from collector.core.endpoints import bound_port

IDENTITY = {
    "accountId": "111122223333",
    "architecture": "x86_64",
    "availabilityZone": "eu-west-1b",
    "imageId": "ami-0abcdef1234567890",
    "instanceId": "i-0123456789abcdef0",
    "instanceType": "m7g.large",
    "pendingTime": "2026-11-30T08:00:00Z",
    "privateIp": "10.0.2.106",
    "region": "eu-west-1",
    "version": "2017-09-30",
}
HOSTNAME = "ip-10-0-2-106.eu-west-1.compute.internal"
_MAX_TTL_S = 21600


class ImdsServer:
    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._runner: web.AppRunner | None = None
        self.endpoint = ""

    async def __aenter__(self) -> ImdsServer:
        app = web.Application()
        app.router.add_put("/latest/api/token", self._token)
        app.router.add_get("/latest/dynamic/instance-identity/document", self._identity)
        app.router.add_get("/latest/meta-data/hostname", self._hostname)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.endpoint = f"http://127.0.0.1:{bound_port(site)}"
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _answer(self, request: web.Request, status: int, text: str = "") -> web.Response:
        self.requests.append((request.method, request.path, status))
        return web.Response(status=status, text=text)

    async def _token(self, request: web.Request) -> web.Response:
        if "X-Forwarded-For" in request.headers:
            return self._answer(request, 403)
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= _MAX_TTL_S:
            return self._answer(request, 400)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.monotonic() + int(ttl)
        return self._answer(request, 200, token)

    def _authorized(self, request: web.Request) -> bool:
        expiry = self.tokens.get(request.headers.get("X-aws-ec2-metadata-token", ""))
        return expiry is not None and time.monotonic() < expiry

    async def _identity(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._answer(request, 401)
        return self._answer(request, 200, json.dumps(IDENTITY, indent=2))

    async def _hostname(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._answer(request, 401)
        return self._answer(request, 200, HOSTNAME)
