"""A botocore session whose credentials come from the standard chain (environment, container
credentials endpoint, shared files, instance metadata), optionally exchanged for a role's with
STS AssumeRole and refreshed by botocore before they expire. botocore is imported here only,
when an AWS component starts: it is a large import. Blocking I/O: call it off the event loop.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.session import Session


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
