"""What processors derive from a resource is derived once per distinct resource."""

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from collector.core.pdata import set_attr
from collector.processors.internal.by_resource import ByResource


def resource(**attributes) -> Resource:
    out = Resource()
    for key, value in attributes.items():
        set_attr(out.attributes, key, value)
    return out


def test_derived_once_per_distinct_resource_and_bounded():
    calls = []

    def derive(r: Resource) -> str | None:
        calls.append(r)
        return r.attributes[0].value.string_value if r.attributes else None

    by_resource = ByResource(derive, size=2)
    assert [by_resource(resource(a="x")), by_resource(resource(a="x"))] == ["x", "x"]
    assert by_resource(resource()) is None and by_resource(resource()) is None
    assert len(calls) == 2  # None is remembered too
    by_resource(resource(a="y"))  # a third: the two known ones are forgotten
    by_resource(resource(a="x"))
    assert len(calls) == 4
