"""Lambda's Extensions API (2020-01-01) and Telemetry API (2022-07-01), as the extension calls
them at AWS_LAMBDA_RUNTIME_API."""

from __future__ import annotations

import json

from collector.awslambda.extension.http11 import request

EXTENSION_NAME = "coldtail"


class LambdaAPIError(RuntimeError):
    """Lambda answered a call with an error status."""


class LambdaAPI:
    """The Extensions and Telemetry APIs at `runtime_api` ("host:port"), over plain sockets.
    Calls raise LambdaAPIError for an error answer and OSError when Lambda cannot be reached."""

    def __init__(self, runtime_api: str) -> None:
        self.runtime_api = runtime_api
        self.id = ""

    def register(self, events: tuple[str, ...] = ("INVOKE", "SHUTDOWN")) -> None:
        """Register for `events` as `coldtail` (the executable's name, as Lambda requires);
        sets `id`."""
        status, headers, body = request(
            self.runtime_api,
            "POST",
            "/2020-01-01/extension/register",
            json.dumps({"events": list(events)}).encode(),
            {"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"},
            timeout=10,
        )
        if status != 200:
            raise LambdaAPIError(f"register: HTTP {status}: {body[:200]!r}")
        self.id = headers.get("lambda-extension-identifier", "")

    def subscribe_telemetry(self, subscription: dict) -> None:
        self._call("PUT", "/2022-07-01/telemetry", subscription, "telemetry subscription", 10)

    def next_event(self) -> dict:
        # No timeout: event/next blocks for as long as the environment is idle or frozen.
        return self._call("GET", "/2020-01-01/extension/event/next", None, "next event", None)

    def init_error(self, error_type: str, message: str) -> None:
        """Report a failed init (after register): Lambda then fails the init phase."""
        request(
            self.runtime_api,
            "POST",
            "/2020-01-01/extension/init/error",
            json.dumps({"errorMessage": message, "errorType": error_type}).encode(),
            {**self._headers(), "Lambda-Extension-Function-Error-Type": error_type},
            timeout=10,
        )

    def _headers(self) -> dict[str, str]:
        return {"Lambda-Extension-Identifier": self.id, "Content-Type": "application/json"}

    def _call(self, method: str, path: str, payload, what: str, timeout: float | None) -> dict:
        body = b"" if payload is None else json.dumps(payload).encode()
        status, _, answer = request(
            self.runtime_api, method, path, body, self._headers(), timeout=timeout
        )
        if status >= 300:
            text = answer[:200].decode("utf-8", "replace")
            raise LambdaAPIError(f"{what}: HTTP {status}: {text}")
        result = json.loads(answer) if answer.strip() else {}
        return result if isinstance(result, dict) else {}
