"""The servicegraph connector's config, with the OTel Collector's option names and defaults."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from collector.core.config_types import (
    ComponentConfig,
    Duration,
    histogram_bounds,
    null_is_defaults,
)

# fmt: off
DEFAULT_BUCKETS = (
    "2ms", "4ms", "6ms", "8ms", "10ms", "50ms", "100ms", "200ms", "400ms", "800ms", "1s", "1400ms",
    "2s", "5s", "10s", "15s",
)
# fmt: on
DEFAULT_PEER_ATTRIBUTES = ("peer.service", "db.name", "db.system")
DEFAULT_DATABASE_NAME_ATTRIBUTES = ("db.name",)
DEFAULT_CACHE_LOOP = 60.0
DEFAULT_STORE_EXPIRATION_LOOP = 2.0


class StoreConfig(ComponentConfig):
    ttl: Duration = Field(2.0, gt=0)
    """How long a client or server span waits in the store for the span of the other side of
    its request. When it runs out the edge expires: it becomes a virtual node edge (see
    `virtual_node_peer_attributes`) or counts in traces_service_graph_unpaired_spans_total.
    Default 2s; must be greater than 0."""

    max_items: int = Field(1000, gt=0)
    """Most edges waiting in the store at once. A span that would need one more (once the
    expired edges are gone) is dropped and counted in traces_service_graph_dropped_spans_total.
    Default 1000; must be greater than 0."""

    @model_validator(mode="before")
    @classmethod
    def _null_body(cls, data: object) -> object:
        return null_is_defaults(data)


class Config(ComponentConfig):
    latency_histogram_buckets: list[Duration] = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS), validate_default=True
    )
    """Upper bounds of the buckets of the request_server and request_client latency
    histograms, as durations (the histograms are in seconds), strictly increasing. Default
    [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s];
    empty means that default."""

    dimensions: list[str] = Field(default_factory=list)
    """Extra metric attributes: each name is looked up on the client span's resource, then the
    span, and becomes `client_<name>`; the same on the server span gives `server_<name>`.
    Values are written as strings; a side without the attribute leaves it out. Default empty."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    """The in-memory store where a span waits for the span of the other side of its request."""

    cache_loop: Duration = Field(DEFAULT_CACHE_LOOP, ge=0)
    """How often series that no request updated for 15 minutes are dropped (a series that comes
    back starts counting again, with a new start time). Default 1m; 0 means that default."""

    store_expiration_loop: Duration = Field(DEFAULT_STORE_EXPIRATION_LOOP, ge=0)
    """How often the store is checked for edges past `store::ttl`. Default 2s; 0 means that
    default."""

    virtual_node_peer_attributes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PEER_ATTRIBUTES)
    )
    """Span attributes naming the peer of a client span whose server never reported, in order
    of priority: when such an edge expires it goes to a virtual server node named by the first
    of them the client span has (`unknown` when it has none), and a server span without a parent
    (a root span) gets a virtual client node named `user`; both with connection_type
    virtual_node. Default [peer.service, db.name, db.system]; empty turns virtual nodes off, and
    expired edges only count as unpaired spans."""

    virtual_node_extra_label: bool = False
    """Add the attribute `virtual_node` to every series: `client` or `server` on an edge whose
    client or server is a virtual node, empty on the others. Default false."""

    metrics_flush_interval: Duration = Field(60.0, ge=0)
    """How often the metrics are sent to the metrics pipeline. Default 60s; 0 sends them after
    every batch of spans. A final flush always happens at shutdown."""

    metrics_timestamp_offset: Duration = Field(0.0, ge=0)
    """Subtracted from the time of every point sent, so the points look taken that much
    earlier. Default 0: points carry the flush time."""

    database_name_attributes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DATABASE_NAME_ATTRIBUTES)
    )
    """Attributes naming the database of a client span, in order of priority, each looked up
    on the span's resource, then the span. A client span with one of them is a whole request by
    itself: an edge to a server node named by its value, with connection_type database, with no
    wait for a server span. Default [db.name]; empty means that default."""

    database_name_attribute: str | None = None
    """The older form of `database_name_attributes`, one attribute (default none); taken when
    that is not set."""

    metrics_exporter: str | None = None
    """Accepted for compatibility with older Collector configs, without effect: the metrics go
    to the pipelines that list this connector as a receiver. Default none."""

    @model_validator(mode="before")
    @classmethod
    def _checked_body(cls, data: object) -> object:
        data = null_is_defaults(data)
        if isinstance(data, dict) and "exponential_histogram_max_size" in data:
            if data["exponential_histogram_max_size"]:
                raise ValueError(
                    "exponential_histogram_max_size: exponential histograms are not supported; "
                    "use latency_histogram_buckets"
                )
            data = {k: v for k, v in data.items() if k != "exponential_histogram_max_size"}
        return data

    @field_validator("latency_histogram_buckets")
    @classmethod
    def _increasing(cls, buckets: list[float]) -> list[float]:
        return histogram_bounds(buckets, DEFAULT_BUCKETS)

    @field_validator("dimensions")
    @classmethod
    def _unique(cls, dimensions: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in dimensions:
            if not name:
                raise ValueError("a dimension name must not be empty")
            if name in seen:
                raise ValueError(f"duplicate dimension name {name!r}")
            seen.add(name)
        return dimensions

    @model_validator(mode="after")
    def _database_attributes(self) -> Config:
        given = "database_name_attributes" in self.model_fields_set
        if not self.database_name_attributes or not given:
            old = self.database_name_attribute
            self.database_name_attributes = [old] if old else list(DEFAULT_DATABASE_NAME_ATTRIBUTES)
        return self

    @property
    def bucket_bounds(self) -> list[float]:
        """The histogram bounds in seconds, rounded to the nanosecond so that 1400ms is 1.4."""
        return [round(b, 9) for b in self.latency_histogram_buckets]
