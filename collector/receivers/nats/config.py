"""The `nats` receiver's options."""

from __future__ import annotations

import re
import socket

from pydantic import Field, field_validator, model_validator

from collector.core.config_types import Duration
from collector.core.nats_stream import NatsStreamConfig

_GROUP_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_MEMBER_RE = re.compile(r"^[A-Za-z0-9_=-]+$")


def default_member() -> str:
    """This host's name, in the characters a member name may hold."""
    return re.sub(r"[^A-Za-z0-9_=-]", "_", socket.gethostname()) or "gateway"


class Config(NatsStreamConfig):
    group: str = "coldtail"
    """The gateways sharing the partitions (default coldtail). It names their durable consumers
    (`<group>_<signal>_<partition>`) and the key-value bucket of their leases
    (`coldtail_<group>`); letters, digits, `-` and `_`."""
    member: str = ""
    """This gateway's name in the group (default empty: the host name). Letters, digits, `-`,
    `_` and `=`; unique in the group."""
    members: list[str] = Field(default_factory=list)
    """Every gateway of the group, `member` included, as a list or comma-separated, like
    `${env:COLDTAIL_GATEWAYS}` = `gw-1,gw-2,gw-3` (default empty: this one alone). Each
    partition belongs to the member ranked first for it by rendezvous hashing among those
    alive, so partitions move only when a member leaves or comes back."""

    @field_validator("members", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    lease_ttl: Duration = Field(10.0, ge=0.5)
    """How long a partition's lease lasts without renewal (default 10s). A member renews its
    leases three times per `lease_ttl`; one that has not for two thirds of it stops consuming,
    and once the lease expires a survivor takes the partition over and replays what was not
    acknowledged. Every member of a group must use the same value."""
    ack_wait: Duration = Field(30.0, gt=0)
    """How long a delivered message may stay unacknowledged before the stream delivers it
    again (default 30s). Messages the pipeline is still working on are kept alive with
    progress notices; after a crash, its messages are redelivered this long later."""
    max_deliver: int = Field(10, ge=1)
    """Deliveries of one message before the stream gives up on it (default 10)."""
    nak_delay: Duration = Field(1.0, ge=0)
    """When the pipeline refuses data with a retryable error (memory limit, full queue), its
    messages are delivered again after this long (default 1s)."""
    max_ack_pending: int = Field(1000, ge=1)
    """The most messages of one partition delivered and not yet acknowledged (default 1000);
    it must cover what `ack_delay` holds."""
    fetch_batch: int = Field(64, ge=1)
    """Messages fetched, and handed to the pipeline as one batch, at a time per partition
    (default 64)."""
    ack_delay: Duration = Field(0.0, ge=0)
    """Keep accepted messages unacknowledged this long (default 0s: acknowledge as soon as the
    pipeline accepted them). Set it above a `tail_sampling` processor's `decision_wait` plus
    the export time, so that traces a gateway holds in memory when it crashes are delivered to
    a survivor instead of lost; traces exported just before a crash may then be exported
    twice. Held messages are kept alive with progress notices, so it may exceed `ack_wait`."""

    @field_validator("group")
    @classmethod
    def _check_group(cls, value: str) -> str:
        if not _GROUP_RE.match(value):
            raise ValueError(f"invalid group {value!r}: use letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _check_members(self) -> Config:
        if not self.member:
            self.member = default_member()
        for name in (self.member, *self.members):
            if not _MEMBER_RE.match(name):
                raise ValueError(
                    f"members: invalid member name {name!r}: use letters, digits, '-', '_' and '='"
                )
        if self.members and self.member not in self.members:
            raise ValueError(f"members: must include this gateway's member {self.member!r}")
        if len(set(self.members)) != len(self.members):
            raise ValueError("members: names must be unique")
        return self

    @property
    def group_members(self) -> list[str]:
        return self.members or [self.member]

    @property
    def bucket(self) -> str:
        """The key-value bucket of the group's leases."""
        return f"coldtail_{self.group}"

    def durable(self, signal: str, partition: int) -> str:
        """The durable consumer of one signal's partition, shared by the group."""
        return f"{self.group}_{signal}_{partition}"
