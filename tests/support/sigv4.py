"""An HTTP endpoint that accepts only requests signed with AWS Signature Version 4 by known
credentials, as AWS endpoints do: it recomputes each signature with botocore from what arrived
on the wire (method, path, query, the signed headers' values, X-Amz-Date and the body) and
answers 403 with the reason when it does not match, the key is unknown, the session token is
missing or wrong, or the date is more than 5 minutes off; 200 otherwise, with the JSON that
`answers` holds for the path, if any.

    async with SigV4Endpoint({"AKID": ("secret", "token")}) as endpoint:
        ... endpoint.url ...; endpoint.accepted (method, path, headers, body)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from collector.core.endpoints import bound_port

# Secret and session token (None for long-term keys) of an access key id, or None if unknown.
KeyLookup = Callable[[str], tuple[str, str | None] | None]

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<headers>[^,]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_MAX_SKEW_S = 300


class SigV4Endpoint:
    def __init__(
        self,
        keys: dict[str, tuple[str, str | None]] | KeyLookup,
        answers: dict[str, dict] | None = None,
    ) -> None:
        self.lookup: KeyLookup = keys.get if isinstance(keys, dict) else keys
        self.answers = answers or {}
        self.accepted: list[tuple[str, str, dict[str, str], bytes]] = []
        self.refused: list[str] = []
        self.scopes: list[tuple[str, str]] = []  # (service, region) of accepted requests
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> SigV4Endpoint:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # The body as sent: a signature covers the compressed bytes.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{bound_port(site)}"
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = self._check(request, body)
        if problem:
            self.refused.append(problem)
            return web.json_response({"message": problem}, status=403)
        self.accepted.append((request.method, request.path_qs, dict(request.headers), body))
        if request.path in self.answers:
            return web.json_response(self.answers[request.path])
        return web.Response(status=200)

    def _check(self, request: web.Request, body: bytes) -> str | None:
        match = _AUTHORIZATION.match(request.headers.get("Authorization", ""))
        if match is None:
            return "missing or malformed Authorization header"
        found = self.lookup(match["key"])
        if found is None:
            return f"unknown access key {match['key']}"
        secret, token = found
        if token is not None and request.headers.get("X-Amz-Security-Token") != token:
            return "missing or wrong X-Amz-Security-Token"
        stamp = request.headers.get("X-Amz-Date", "")
        try:
            when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "missing or malformed X-Amz-Date"
        if abs((datetime.now(UTC) - when).total_seconds()) > _MAX_SKEW_S:
            return "X-Amz-Date is too far from now"
        names = match["headers"].split(";")
        if "host" not in names or "x-amz-date" not in names:
            return "host and x-amz-date must be signed"
        signed = {name: request.headers.get(name, "") for name in names}
        wire = AWSRequest(
            method=request.method, url=f"http://{request.host}{request.path_qs}", data=body
        )
        for name, value in signed.items():
            wire.headers[name] = value
        wire.context["timestamp"] = stamp
        signer = SigV4Auth(
            Credentials(match["key"], secret, token), match["service"], match["region"]
        )
        canonical = signer.canonical_request(wire)
        expected = signer.signature(signer.string_to_sign(wire, canonical), wire)
        if expected != match["signature"]:
            return "the request signature does not match"
        self.scopes.append((match["service"], match["region"]))
        return None
