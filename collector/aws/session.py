"""botocore for the AWS components: a session whose credentials come from the standard chain
(environment, container credentials endpoint, shared files, instance metadata), optionally
exchanged for a role's with STS AssumeRole and refreshed by botocore before they expire; an
exporter's service client; and botocore's errors as pipeline errors. botocore is imported here
only, when an AWS component starts: it is a large import. Sessions and clients do blocking I/O:
use them off the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from collector.core.consumer import PermanentError, RetryableError

if TYPE_CHECKING:
    from botocore.session import Session

T = TypeVar("T")
_THROTTLED = frozenset(
    {"ThrottledException", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}
)


def aws_session(
    region: str = "", role_arn: str = "", session_name: str = "coldtail", sts_region: str = ""
) -> Session:
    """The session, its credentials resolved now so that missing ones fail the start rather
    than an export; ValueError when there are none."""
    import botocore.session
    from botocore.credentials import (
        AssumeRoleCredentialFetcher,
        CredentialProvider,
        CredentialResolver,
        DeferredRefreshableCredentials,
    )

    def session_in(region: str) -> Session:
        session = botocore.session.Session()
        # AWS_REGION is what Lambda and ECS set; botocore itself reads AWS_DEFAULT_REGION.
        region = region or os.environ.get("AWS_REGION", "")
        if region:
            session.set_config_variable("region", region)
        return session

    chain = session_in(region)
    credentials = chain.get_credentials()
    if credentials is None:
        raise ValueError(
            "no AWS credentials found (environment, container credentials, shared files, "
            "instance metadata)"
        )
    if not role_arn:
        return chain
    sts = session_in(sts_region or chain.get_config_variable("region") or "")
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=sts.create_client,
        source_credentials=credentials,
        role_arn=role_arn,
        extra_args={"RoleSessionName": session_name},
    )
    assumed = DeferredRefreshableCredentials(
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    assumed.get_frozen_credentials()

    class Assumed(CredentialProvider):
        METHOD = "assume-role"

        def load(self):
            return assumed

    session = session_in(region or chain.get_config_variable("region") or "")
    session.register_component("credential_provider", CredentialResolver([Assumed()]))
    return session


def service_client(service: str, region: str, role_arn: str, endpoint: str) -> Any:
    """A botocore client of `service` for an exporter: one attempt per call, since retries are
    the sender's (with its backoff and limits)."""
    from botocore.config import Config

    session = aws_session(region, role_arn)
    options = Config(retries={"total_max_attempts": 1}, user_agent_extra="coldtail")
    return session.create_client(service, endpoint_url=endpoint or None, config=options)


def call(operation: Callable[[], T], what: str, retryable: frozenset[str] = frozenset()) -> T:
    """`operation()`, its botocore errors as pipeline errors: throttling, 5xx, no connection and
    the `retryable` error codes are RetryableError, other client errors PermanentError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return operation()
    except ClientError as e:
        error = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.get("Code", "")
        message = f"{what}: {code}: {error.get('Message')}"
        if code in _THROTTLED | retryable or status == 429 or status >= 500:
            raise RetryableError(message) from None
        raise PermanentError(message) from None
    except BotoCoreError as e:  # no connection, timeouts
        raise RetryableError(f"{what}: {e}") from None
