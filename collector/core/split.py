"""Cutting a batch into requests of at most N items, keeping each item's resource and scope:
the batch processor's `send_batch_max_size` and the sending queue's `batch.max_size`."""

from __future__ import annotations

from typing import Any

from collector.core.pdata import (
    LEVELS,
    count_items,
    metric_points,
    new_batch,
    resources,
    signal_of,
)
from collector.core.signals import Signal


def split_batch(batch, limit: int) -> list:
    """`batch` as chunks of at most `limit` items, in order, all but the last exactly full. Each
    chunk repeats the resource and scope of the items it holds; a metric whose data points span
    chunks is repeated with its descriptor. Resources and scopes without items are left out."""
    if count_items(batch) <= limit:
        return [batch]
    writer = _ChunkWriter(signal_of(batch), limit)
    for res in resources(batch):
        for scope in getattr(res, writer.scopes_field):
            items = getattr(scope, writer.items_field)
            if writer.signal is Signal.METRICS:
                for metric in items:
                    writer.add_metric(res, scope, metric)
            else:
                writer.add_items(res, scope, items)
    return writer.chunks


class _ChunkWriter:
    def __init__(self, signal: Signal, limit: int) -> None:
        self.signal = signal
        self.scopes_field, self.items_field = LEVELS[signal]
        self.chunks: list = []
        self._limit = limit
        self._room = 0
        self._res_source = self._scope_source = None
        # The output resource and items field of whichever signal this writer chunks.
        self._out_res: Any = None
        self._target: Any = None

    def add_items(self, res, scope, items) -> None:
        start = 0
        while start < len(items):
            target = self._items_for(res, scope, need_room=True)
            end = start + min(self._room, len(items) - start)
            target.extend(items[start:end])
            self._room -= end - start
            start = end

    def add_metric(self, res, scope, metric) -> None:
        points = metric_points(metric)
        target = self._items_for(res, scope, need_room=len(points) > 0)
        if len(points) <= self._room:
            target.add().CopyFrom(metric)
            self._room -= len(points)
            return
        start = 0
        while start < len(points):
            target = self._items_for(res, scope, need_room=True)
            end = start + min(self._room, len(points) - start)
            part = target.add()
            _copy_descriptor(metric, part)
            metric_points(part).extend(points[start:end])
            self._room -= end - start
            start = end

    def _items_for(self, res, scope, need_room: bool):
        """The repeated items field for (res, scope) in the current chunk; a new chunk is opened
        when there is none yet or it is full and room is needed."""
        if not self.chunks or (need_room and self._room == 0):
            self.chunks.append(new_batch(self.signal))
            self._room = self._limit
            self._res_source = self._scope_source = None
        if self._res_source is not res:
            self._out_res = resources(self.chunks[-1]).add()
            self._out_res.resource.CopyFrom(res.resource)
            self._out_res.schema_url = res.schema_url
            self._res_source, self._scope_source = res, None
        if self._scope_source is not scope:
            out_scope = getattr(self._out_res, self.scopes_field).add()
            out_scope.scope.CopyFrom(scope.scope)
            out_scope.schema_url = scope.schema_url
            self._target = getattr(out_scope, self.items_field)
            self._scope_source = scope
        return self._target


def _copy_descriptor(metric, out) -> None:
    """Everything of `metric` but its data points."""
    out.name, out.description, out.unit = metric.name, metric.description, metric.unit
    out.metadata.extend(metric.metadata)
    kind = metric.WhichOneof("data")
    data, out_data = getattr(metric, kind), getattr(out, kind)
    out_data.SetInParent()
    for field, value in data.ListFields():
        if field.name != "data_points":
            setattr(out_data, field.name, value)
