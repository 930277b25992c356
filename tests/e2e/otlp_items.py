"""Flatten export requests into comparable items: every span, metric point and log record with
its resource and scope, so tests can check that nothing was lost or changed."""

from __future__ import annotations

from collector.core.pdata import metric_points


def spans(requests) -> dict[bytes, tuple]:
    """span_id -> (resource, scope, span) serialized, for exact comparison."""
    out = {}
    for req in requests:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out[span.span_id] = (
                        rs.resource.SerializeToString(deterministic=True),
                        ss.scope.SerializeToString(deterministic=True),
                        span.SerializeToString(deterministic=True),
                    )
    return out


def metric_point_set(requests) -> list[tuple]:
    """(resource, scope, metric name/unit/type, point) for every data point, sorted."""
    out = []
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in metric_points(m):
                        out.append(
                            (
                                rm.resource.SerializeToString(deterministic=True),
                                sm.scope.SerializeToString(deterministic=True),
                                m.name,
                                m.unit,
                                m.description,
                                m.WhichOneof("data"),
                                p.SerializeToString(deterministic=True),
                            )
                        )
    return sorted(out)


def log_record_set(requests) -> list[tuple]:
    out = []
    for req in requests:
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    out.append(
                        (
                            rl.resource.SerializeToString(deterministic=True),
                            sl.scope.SerializeToString(deterministic=True),
                            rec.SerializeToString(deterministic=True),
                        )
                    )
    return sorted(out)
