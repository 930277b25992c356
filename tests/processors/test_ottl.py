"""OTTL: the grammar, every path, editor and converter coldtail implements, comparisons and
math, run against real OTLP protobuf batches; and the errors a config gets."""

import hashlib

import pytest

from collector.core.pdata import get_attr, iter_items, set_attr
from collector.core.signals import Signal
from collector.processors.internal.ottl import (
    OttlError,
    StatementError,
    TransformContext,
    compile_condition,
    compile_statement,
    each,
    infer_context,
    parse,
)
from collector.processors.internal.ottl import syntax as s
from tests.support.builders import make_logs, make_metrics, make_traces

SPAN_ATTRIBUTES = {
    "http.method": "GET",
    "http.status_code": 200,
    "ratio": 0.5,
    "ok": True,
    "tags": ["a", "b"],
    "nested": {"inner": {"k": "v"}, "list": [1, 2]},
}


def span_batch():
    batch = make_traces(
        1,
        resource={"service.name": "checkout", "k8s.pod.name": "pod-1"},
        name="GET /orders/42",
        attributes=SPAN_ATTRIBUTES,
        parent_span_id=b"\x01" * 8,
    )
    span = batch.resource_spans[0].scope_spans[0].spans[0]
    span.trace_state = "vendor=abc,other=1"
    event = span.events.add()
    event.name = "cache.miss"
    event.time_unix_nano = span.start_time_unix_nano + 5
    set_attr(event.attributes, "cache.key", "order:42")
    return batch


def first_span(batch):
    return batch.resource_spans[0].scope_spans[0].spans[0]


def run(statements, batch, signal=Signal.TRACES, context="span"):
    runs = [compile_statement(text, signal, context) for text in statements]
    ctx = TransformContext()
    for _ in each(batch, signal, context, ctx):
        for statement in runs:
            statement(ctx)
    return batch


def evaluate(expression, context="span"):
    """`expression`'s value on the test span, stored through set() and read back."""
    batch = run([f'set(attributes["out"], {expression})'], span_batch(), context=context)
    return get_attr(first_span(batch).attributes, "out")


# --- grammar -------------------------------------------------------------------------------


def test_precedence_of_math_and_booleans():
    statement = parse('set(x, 1 + 2 * -3) where not a == 1 or b and c == "d"')
    assert statement.editor.args[1].value == s.Math(
        8, "+", s.Literal(8, 1), s.Math(12, "*", s.Literal(12, 2), s.Literal(16, -3))
    )
    where = statement.where
    assert isinstance(where, s.BoolOp) and where.op == "or"
    assert isinstance(where.left, s.Not) and isinstance(where.left.operand, s.Compare)
    assert isinstance(where.right, s.BoolOp) and where.right.op == "and"


def test_paths_keys_literals_and_named_arguments():
    statement = parse(
        r'truncate_all(span.attributes["a"][0], 10, truncation_marker = "\"…\"\\") '
        "where x == 0x0aFF and y == -.5 and z == nil"
    )
    path, limit, marker = (a.value for a in statement.editor.args)
    assert [f.name for f in path.fields] == ["span", "attributes"]
    assert path.fields[1].keys == (s.Literal(30, "a"), s.Literal(35, 0))
    assert limit == s.Literal(39, 10)
    assert statement.editor.args[2].name == "truncation_marker"
    assert marker.value == '"…"\\'
    literals = [n.value for n in s.walk(statement.where) if isinstance(n, s.Literal)]
    assert literals == [b"\x0a\xff", -0.5, None]


def test_unknown_escapes_keep_their_backslash_for_regular_expressions():
    assert parse(r'IsMatch(name, "\d+\.\\s\"")', condition=True).args[1].value.value == (
        '\\d+\\.\\s"'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("set(name", "unexpected end of text"),
        ('set(name, "x") where', "unexpected end of text"),
        ("set(name, $)", "unexpected character '$' at column 11"),
        ('set(name, "x") name', "unexpected 'name' at column 16"),
        ("set(name, 0x1)", "a bytes literal needs an even number of hex digits at column 11"),
        ("   ", "empty statement"),
    ],
)
def test_syntax_errors_point_at_the_column(text, message):
    with pytest.raises(StatementError) as e:
        parse(text)
    assert str(e.value) == message


# --- values --------------------------------------------------------------------------------


def _fnv(text: str) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h - 2**64 if h >= 2**63 else h


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('"text"', "text"),
        (r'"say \"hi\"\n"', 'say "hi"\n'),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("1.5 * 2.0 - 0.5", 2.5),
        ("-.5", -0.5),
        ("0x01ff", b"\x01\xff"),
        ("true", True),
        ('[1, 2.5, true, "x"]', [1, 2.5, True, "x"]),
        ('{"a": [1, "x"], "b": {"c": nil}}', {"a": [1, "x"], "b": {"c": None}}),
        ("name", "GET /orders/42"),
        ("span.name", "GET /orders/42"),
        ('attributes["http.method"]', "GET"),
        ('span.attributes["nested"]["inner"]["k"]', "v"),
        ('attributes["nested"]["list"][1]', 2),
        ('attributes["tags"][-1]', "b"),
        ('attributes["nested"]["inner"]', {"k": "v"}),
        ('resource.attributes["service.name"]', "checkout"),
        ("resource.dropped_attributes_count", 0),
        ("instrumentation_scope.name", "coldtail.testing"),
        ("scope.name", "coldtail.testing"),
        ("kind", 2),
        ("kind.string", "Server"),
        ("span.kind.deprecated_string", "SPAN_KIND_SERVER"),
        ("SPAN_KIND_CLIENT", 3),
        ("STATUS_CODE_ERROR", 2),
        ("status.code", 0),
        ("status.message", ""),
        ('trace_state["vendor"]', "abc"),
        ("trace_state", "vendor=abc,other=1"),
        ("parent_span_id.string", "01" * 8),
        ("parent_span_id", b"\x01" * 8),
        ("dropped_events_count", 0),
        ("end_time_unix_nano - start_time_unix_nano", 10_000_000),
        ("Milliseconds(end_time - start_time)", 10),
        ("Len(events)", 1),
        (
            'Concat([name, attributes["http.method"], 1, 2.5, true, nil], "|")',
            "GET /orders/42|GET|1|2.5|true|<nil>",
        ),
        ('Split("a,b,c", ",")[2]', "c"),
        ("Len(name)", 14),
        ('Len("é")', 2),
        ('Len(attributes["tags"])', 2),
        ('Int("42")', 42),
        ("Int(2.9)", 2),
        ('Int("x")', None),
        ('Double("2.5")', 2.5),
        ('Bool("T")', True),
        ("String(200)", "200"),
        ('String(attributes["ok"])', "true"),
        ("String(parent_span_id)", "01" * 8),
        ('String(attributes["tags"])', '["a","b"]'),
        ('ConvertCase("MyMetricName", "snake")', "my_metric_name"),
        ('ConvertCase("my_metric", "camel")', "MyMetric"),
        ('ConvertCase(name, "upper")', "GET /ORDERS/42"),
        ('ToLowerCase("ABC")', "abc"),
        ('Substring("123456789", 2, 3)', "345"),
        ('Trim("  x  ")', "x"),
        ('Trim("!!x!!", "!")', "x"),
        ('TrimPrefix("ingest_service", "ingest_")', "service"),
        ('TrimSuffix("ingest_service", "_service")', "ingest"),
        ('SHA256("name")', hashlib.sha256(b"name").hexdigest()),
        ('SHA1("name")', hashlib.sha1(b"name").hexdigest()),
        ('MD5("name")', hashlib.md5(b"name").hexdigest()),
        ('FNV("name")', _fnv("name")),
        (r'ParseJSON("{\"a\": {\"b\": 1}, \"c\": [true]}")["a"]["b"]', 1.0),
        (r'ParseJSON("[1, \"x\"]")[1]', "x"),
        (r'ParseKeyValue("k1=v1 k2=\"v 2\"")["k2"]', "v 2"),
        ('ParseKeyValue("a:1,b:2", ":", ",")', {"a": "1", "b": "2"}),
        (r'ExtractPatterns("GIT_SHA=abc123", "GIT_SHA=(?P<git.sha>\\w+)")', {"git.sha": "abc123"}),
        ('Base64Encode("test string")', "dGVzdCBzdHJpbmc="),
        ('Base64Encode("a", "base64-raw-url")', "YQ"),
        ('Decode("aGVsbG8gd29ybGQ=", "base64")', "hello world"),
        ('TraceID("0102030405060708090a0b0c0d0e0f10")', bytes(range(1, 17))),
        ("SpanID(0x0102030405060708)", bytes(range(1, 9))),
        ("UnixSeconds(Unix(1672527600))", 1672527600),
        ("UnixMilli(Unix(1, 5000000))", 1005),
        ('Hours(Duration("1h30m"))', 1.5),
        ('Nanoseconds(Duration("1.5us"))', 1500),
        ('UnixSeconds(TruncateTime(Unix(125), Duration("1m")))', 120),
        ("Nanosecond(Unix(1, 42))", 42),
        ('Coalesce([attributes["missing"], nil, "fallback"])', "fallback"),
        ('Index(attributes["tags"], "b")', 1),
        ('Index("hello world", "world")', 6),
        ('Keys({"k1": "v1"})', ["k1"]),
        ('Values({"k1": "v1"})', ["v1"]),
        ('Sort([3, 1, 2], "desc")', [3, 2, 1]),
        ("Sort([2, 1.5])", [1.5, 2]),
        ('ToKeyValueString({"a": "1", "b": "x y"}, "=", " ", true)', 'a=1 b="x y"'),
        ('ParseInt("0xFF", 0)', 255),
        ('ParseInt("-20", 8)', -16),
        ("Log(1)", 0.0),
        ('attributes["http.status_code"] * 2', 400),
    ],
)
def test_values(expression, expected):
    assert evaluate(expression) == expected


def test_ids_and_times_read_from_the_span():
    batch = span_batch()
    span = first_span(batch)
    run(
        [
            'set(attributes["sid"], span_id.string)',
            'set(attributes["tid"], trace_id)',
            'set(attributes["start"], UnixNano(start_time))',
            'set(attributes["uuid"], UUID())',
            'set(attributes["now"], UnixSeconds(Now()))',
            'set(attributes["year"], Year(start_time))',
        ],
        batch,
    )
    assert get_attr(span.attributes, "sid") == span.span_id.hex()
    assert get_attr(span.attributes, "tid") == span.trace_id
    assert get_attr(span.attributes, "start") == span.start_time_unix_nano
    assert len(get_attr(span.attributes, "uuid")) == 36
    assert get_attr(span.attributes, "now") >= span.start_time_unix_nano // 10**9
    assert 2020 < get_attr(span.attributes, "year") < 3000


# --- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('name == "GET /orders/42"', True),
        ('name != "x"', True),
        ('"GET /orders/42" == name', True),
        ('attributes["http.status_code"] >= 200', True),
        ('attributes["http.status_code"] == 200.0', True),
        ('300 > attributes["http.status_code"]', True),
        ('attributes["ok"] == 1', False),
        ('attributes["ok"] != 1', True),
        ('attributes["missing"] == nil', True),
        ('nil == attributes["missing"]', True),
        ('attributes["http.method"] == nil', False),
        ('"a" < "b"', True),
        ('1 < "2"', False),
        ('1 != "1"', True),
        ("false < true", True),
        ('kind == SPAN_KIND_SERVER and not IsMatch(name, "^POST")', True),
        ("false or (true and not false)", True),
        ('not name == "x"', True),
        ("not (1 == 1 or 2 == 3)", False),
        ('IsMatch(attributes["http.status_code"], "^2\\\\d\\\\d$")', True),
        ('IsMatch(attributes["missing"], ".*")', False),
        (
            'IsString(name) and IsInt(attributes["http.status_code"])'
            ' and IsDouble(attributes["ratio"]) and IsBool(attributes["ok"])'
            ' and IsMap(attributes["nested"])'
            ' and IsList(attributes["tags"])',
            True,
        ),
        ('IsString(attributes["ok"])', False),
        ("span_id != SpanID(0x0000000000000000)", True),
        ("parent_span_id == SpanID(0x0101010101010101)", True),
        ("trace_id == TraceID(0x00000000000000000000000000000000)", False),
        ("end_time > start_time", True),
        ("start_time_unix_nano < end_time_unix_nano", True),
        ('end_time - start_time < Duration("1s")', True),
        ('HasPrefix(name, "GET")', True),
        ('HasSuffix(name, "41")', False),
        ('IsInCIDR("10.1.2.3", ["10.0.0.0/8", "192.168.0.0/16"])', True),
        ('IsInCIDR("11.1.2.3", ["10.0.0.0/8"])', False),
        ('ContainsValue(attributes["tags"], "b")', True),
        ('attributes["tags"] == ["a", "b"]', True),
        ('attributes["nested"]["inner"] == {"k": "v"}', True),
        ('IsEmpty(attributes["missing"]) and not IsEmpty(name)', True),
        ("IsRootSpan()", False),
        ('resource.attributes["service.name"] == "checkout"', True),
        ('trace_state["other"] == "1"', True),
        ("1 + 1 == 2", True),
    ],
)
def test_conditions(condition, expected):
    test = compile_condition(condition, Signal.TRACES, "span")
    ctx = TransformContext()
    results = [test(ctx) for _ in each(span_batch(), Signal.TRACES, "span", ctx)]
    assert results == [expected]


# --- editors -------------------------------------------------------------------------------


def attrs(batch):
    return {
        kv.key: get_attr(first_span(batch).attributes, kv.key)
        for kv in first_span(batch).attributes
    }


@pytest.mark.parametrize(
    ("statements", "changed", "removed"),
    [
        (['set(attributes["x"], "y") where name == "GET /orders/42"'], {"x": "y"}, set()),
        (['set(attributes["x"], "y") where name == "other"'], {}, set()),
        (['set(attributes["x"], nil)'], {}, set()),
        (
            ['set(attributes["nested"]["inner"]["new"], 1)'],
            {"nested": {"inner": {"k": "v", "new": 1}, "list": [1, 2]}},
            set(),
        ),
        (['set(attributes["deep"]["a"]["b"], true)'], {"deep": {"a": {"b": True}}}, set()),
        (['set(attributes["tags"][0], "z")'], {"tags": ["z", "b"]}, set()),
        (['delete_key(attributes, "http.method")'], {}, {"http.method"}),
        (['delete_key(attributes["nested"], "list")'], {"nested": {"inner": {"k": "v"}}}, set()),
        (
            [r'delete_matching_keys(attributes, "^http\\.")'],
            {},
            {"http.method", "http.status_code"},
        ),
        (
            ['keep_keys(attributes, ["ok", "ratio", "test.index"])'],
            {},
            {"http.method", "http.status_code", "tags", "nested"},
        ),
        (
            ['keep_matching_keys(attributes, "^(ok|ratio|test\\\\.index)$")'],
            {},
            {"http.method", "http.status_code", "tags", "nested"},
        ),
        (
            ['set(attributes["long"], "abcdefgh")', "truncate_all(attributes, 4)"],
            {"long": "abcd"},
            set(),
        ),
        (
            ['set(attributes["long"], "abcdefgh")', 'truncate_all(attributes, 6, true, "...")'],
            {"long": "abc..."},
            set(),
        ),
        (['set(attributes["long"], "ééé")', "truncate_all(attributes, 3)"], {"long": "é"}, set()),
        ([r'replace_pattern(attributes["http.method"], "^G", "g")'], {"http.method": "gET"}, set()),
        ([r'replace_pattern(attributes["x"], "a", "b")'], {}, set()),
        (
            [r'replace_all_patterns(attributes, "value", "^GET$", "get")'],
            {"http.method": "get"},
            set(),
        ),
        (
            [r'replace_all_patterns(attributes, "key", "^http\\.(.*)", "h.$1")'],
            {"h.method": "GET", "h.status_code": 200},
            {"http.method", "http.status_code"},
        ),
        (['replace_all_matches(attributes, "G*", "matched")'], {"http.method": "matched"}, set()),
        (['merge_maps(attributes, {"a": 1, "ok": false}, "insert")'], {"a": 1}, set()),
        (['merge_maps(attributes, {"a": 1, "ok": false}, "update")'], {"ok": False}, set()),
        (['merge_maps(attributes, {"a": 1, "ok": false}, "upsert")'], {"a": 1, "ok": False}, set()),
        (['merge_maps(attributes, attributes["nested"]["inner"], "upsert")'], {"k": "v"}, set()),
        (['append(attributes["tags"], "c")'], {"tags": ["a", "b", "c"]}, set()),
        (['append(attributes["new"], values = ["x", 1])'], {"new": ["x", 1]}, set()),
        (['append(attributes["http.method"], "POST")'], {"http.method": ["GET", "POST"]}, set()),
        (
            ['flatten(attributes["nested"])'],
            {"nested": {"inner.k": "v", "list.0": 1, "list.1": 2}},
            set(),
        ),
        (
            ['set(attributes["d"], {"a": {"b": {"c": 1}}})', 'flatten(attributes["d"], "p", 1)'],
            {"d": {"p.a.b": {"c": 1}}},
            set(),
        ),
        (['delete_index(attributes["tags"], 0)'], {"tags": ["b"]}, set()),
        (
            ["stringify_all(attributes)"],
            {
                "http.status_code": "200",
                "ratio": "0.5",
                "ok": "true",
                "tags": '["a","b"]',
                "nested": '{"inner":{"k":"v"},"list":[1,2]}',
                "test.index": "0",
            },
            set(),
        ),
        (
            ['set(cache["x"], name)', 'set(attributes["from_cache"], cache["x"])'],
            {"from_cache": "GET /orders/42"},
            set(),
        ),
        (
            [
                'set(cache["m"], attributes)',
                'keep_keys(cache["m"], ["ok"])',
                'set(attributes["kept"], cache["m"])',
            ],
            {"kept": {"ok": True}},
            set(),
        ),
        (['set(attributes, {"only": "this"})'], {"only": "this"}, {*SPAN_ATTRIBUTES, "test.index"}),
    ],
)
def test_editors(statements, changed, removed):
    before = attrs(span_batch())
    after = attrs(run(statements, span_batch()))
    assert {k: v for k, v in after.items() if before.get(k, object()) != v} == changed
    assert set(before) - set(after) == removed


def test_limit_keeps_priority_keys():
    after = attrs(run(['limit(attributes, 2, ["ok"])'], span_batch()))
    assert len(after) == 2 and "ok" in after


def test_replacement_patterns_expand_groups_and_apply_a_function():
    batch = run(
        [
            r'replace_pattern(name, "/(\\d+)", "/n$1")',
            r'replace_pattern(attributes["http.method"], "(G)(ET)", "${2}_$1")',
            r'replace_pattern(attributes["k"], "secret=(\\w+)", "$1", SHA256, "sha:%s")',
            'replace_match(attributes["route"], "/user/*/list/*", "/user/{id}/list/{id}")',
        ],
        span_batch_with({"k": "a secret=hunter2 b", "route": "/user/7/list/9"}),
    )
    span = first_span(batch)
    assert span.name == "GET /orders/n42"
    assert get_attr(span.attributes, "http.method") == "ET_G"
    assert get_attr(span.attributes, "k") == f"a sha:{hashlib.sha256(b'hunter2').hexdigest()} b"
    assert get_attr(span.attributes, "route") == "/user/{id}/list/{id}"


def span_batch_with(extra: dict):
    batch = span_batch()
    for key, value in extra.items():
        set_attr(first_span(batch).attributes, key, value)
    return batch


def test_span_fields_are_set():
    batch = run(
        [
            'set(name, Concat([attributes["http.method"], "/orders/{id}"], " "))',
            "set(status.code, STATUS_CODE_ERROR)",
            'set(status.message, "bad")',
            'set(kind.string, "Client")',
            'set(trace_state["vendor"], "xyz")',
            "set(span_id, SpanID(0x0102030405060708))",
            'set(trace_id.string, "0102030405060708090a0b0c0d0e0f10")',
            "set(parent_span_id, SpanID(0x0000000000000000))",
            "set(start_time, Unix(1700000000))",
            "set(end_time_unix_nano, 1700000001000000000)",
            "set(dropped_attributes_count, 3)",
            'set(resource.attributes["env"], "prod")',
            'set(instrumentation_scope.version, "2.0")',
            "set(name, 42)",  # a number is no name: ignored, as upstream
        ],
        span_batch(),
    )
    rs = batch.resource_spans[0]
    span = first_span(batch)
    assert span.name == "GET /orders/{id}"
    assert (span.status.code, span.status.message, span.kind) == (2, "bad", 3)
    assert span.trace_state == "vendor=xyz,other=1"
    assert span.span_id == bytes(range(1, 9))
    assert span.trace_id == bytes(range(1, 17))
    assert span.parent_span_id == b""
    assert span.start_time_unix_nano == 1_700_000_000 * 10**9
    assert span.end_time_unix_nano == 1_700_000_001 * 10**9
    assert span.dropped_attributes_count == 3
    assert get_attr(rs.resource.attributes, "env") == "prod"
    assert rs.scope_spans[0].scope.version == "2.0"


# --- other contexts ------------------------------------------------------------------------


def test_span_event_context_reaches_its_span():
    batch = run(
        [
            'set(attributes["span"], span.name)',
            'set(name, Concat([name, resource.attributes["service.name"]], "@"))',
            'set(attributes["late"], time_unix_nano - span.start_time_unix_nano)',
        ],
        span_batch(),
        context="spanevent",
    )
    event = first_span(batch).events[0]
    assert event.name == "cache.miss@checkout"
    assert get_attr(event.attributes, "span") == "GET /orders/42"
    assert get_attr(event.attributes, "late") == 5


def test_resource_and_scope_contexts():
    batch = run(
        ['set(attributes["pods"], Concat([attributes["k8s.pod.name"], "x"], "-"))'],
        span_batch(),
        context="resource",
    )
    assert get_attr(batch.resource_spans[0].resource.attributes, "pods") == "pod-1-x"
    batch = run(
        ['set(name, Concat([name, resource.attributes["service.name"]], "/"))'],
        span_batch(),
        context="scope",
    )
    assert batch.resource_spans[0].scope_spans[0].scope.name == "coldtail.testing/checkout"


def log_batch():
    batch = make_logs(2)
    first, second = batch.resource_logs[0].scope_logs[0].log_records
    first.body.string_value = "request failed"
    first.severity_number, first.severity_text = 13, "WARN"
    second.body.string_value = '{"user": "ann", "n": 2}'
    second.severity_number = 9
    return batch


def test_log_context():
    batch = run(
        [
            'set(log.severity_text, "FAIL") where log.body == "request failed"',
            'set(log.attributes["warn"], true) where log.severity_number >= SEVERITY_NUMBER_WARN',
            'merge_maps(log.cache, ParseJSON(log.body), "upsert")'
            ' where IsMatch(log.body, "^\\\\{")',
            'set(log.attributes["user"], log.cache["user"])',
            'set(log.body, log.cache) where log.cache["n"] != nil',
            'set(log.attributes["n"], log.body["n"]) where IsMap(log.body)',
            'set(log.attributes["text"], log.body.string)',
            "set(log.observed_time, Unix(10))",
        ],
        log_batch(),
        Signal.LOGS,
        "log",
    )
    first, second = (r for _, _, r in iter_items(batch))
    assert first.severity_text == "FAIL"
    assert get_attr(first.attributes, "warn") is True
    assert get_attr(first.attributes, "user") is None
    assert get_attr(second.attributes, "user") == "ann"
    assert get_attr(second.attributes, "warn") is None
    assert second.body.HasField("kvlist_value")
    assert get_attr(second.attributes, "n") == 2.0
    assert get_attr(second.attributes, "text") == '{"user":"ann","n":2.0}'
    assert first.observed_time_unix_nano == 10 * 10**9


def test_metric_and_datapoint_contexts():
    batch = make_metrics(2, name="http.requests")
    (metric,) = [m for _, _, m in iter_items(batch)]
    metric.sum.data_points[0].as_double = 2.5
    run(
        [
            'set(metric.description, "Sum") where metric.type == METRIC_DATA_TYPE_SUM',
            'set(metric.unit, "{request}") where metric.aggregation_temporality == '
            "AGGREGATION_TEMPORALITY_CUMULATIVE",
            "set(metric.is_monotonic, false)",
            'set(metric.name, "ignored") where metric.type == METRIC_DATA_TYPE_GAUGE',
        ],
        batch,
        Signal.METRICS,
        "metric",
    )
    run(
        [
            'set(attributes["metric"], metric.name)',
            'set(value_int, value_int * 10) where attributes["test.index"] == 1',
            'set(attributes["doubled"], value_double * 2.0) where value_double > 0.0',
            "set(start_time_unix_nano, time_unix_nano - 5)",
        ],
        batch,
        Signal.METRICS,
        "datapoint",
    )
    assert (metric.name, metric.description, metric.unit) == ("http.requests", "Sum", "{request}")
    assert metric.sum.is_monotonic is False
    first, second = metric.sum.data_points
    assert [get_attr(p.attributes, "metric") for p in (first, second)] == ["http.requests"] * 2
    assert (first.as_double, second.as_int) == (2.5, 20)
    assert get_attr(first.attributes, "doubled") == 5.0
    assert get_attr(second.attributes, "doubled") is None
    assert first.time_unix_nano - first.start_time_unix_nano == 5


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "context", "signal", "message"),
    [
        (
            'set(attributes["x"], Foo())',
            "span",
            Signal.TRACES,
            "unknown function 'Foo' at column 22",
        ),
        ("sett(name, 1)", "span", Signal.TRACES, "unknown function 'sett' at column 1"),
        (
            'set(atributes["x"], 1)',
            "span",
            Signal.TRACES,
            "unknown path 'atributes' in the span context at column 5",
        ),
        ("set(span.nme, 1)", "span", Signal.TRACES, "unknown path 'span.nme'"),
        (
            "set(name, SPAN_KIND_SERVERR)",
            "span",
            Signal.TRACES,
            "unknown enum 'SPAN_KIND_SERVERR' at column 11",
        ),
        (
            "set(name, SEVERITY_NUMBER_WARN)",
            "span",
            Signal.TRACES,
            "unknown enum 'SEVERITY_NUMBER_WARN'",
        ),
        ('set(name, "x") where name', "span", Signal.TRACES, "expected a condition"),
        (
            "set(Len(name), 1)",
            "span",
            Signal.TRACES,
            "argument 'target' of set must be a path at column 5",
        ),
        ("set(events, 1)", "span", Signal.TRACES, "'events' cannot be set"),
        (
            'keep_keys(attributes, "x")',
            "span",
            Signal.TRACES,
            "argument 'keys' of keep_keys must be a list of strings",
        ),
        (
            'replace_pattern(name, "(", "x")',
            "span",
            Signal.TRACES,
            "invalid regular expression '('",
        ),
        ('replace_pattern(name, "a", "x", SHA256, "%d")', "span", Signal.TRACES, "exactly one %s"),
        (
            'replace_pattern(name, "a", "x", Len)',
            "span",
            Signal.TRACES,
            "must name a converter taking one string",
        ),
        (
            'merge_maps(attributes, attributes, "merge")',
            "span",
            Signal.TRACES,
            "strategy must be insert, update or upsert",
        ),
        ('ConvertCase(name, "kebab")', "span", Signal.TRACES, "starts with an editor"),
        (
            'set(name, ConvertCase(name, "kebab"))',
            "span",
            Signal.TRACES,
            "toCase must be lower, upper, snake or camel",
        ),
        (
            'limit(attributes, 1, ["a", "b"])',
            "span",
            Signal.TRACES,
            "more priority_keys than limit",
        ),
        ("truncate_all(attributes, -1)", "span", Signal.TRACES, "limit must be 0 or more"),
        ("set(name)", "span", Signal.TRACES, "set needs argument 'value'"),
        ('set(name, "a", "b")', "span", Signal.TRACES, "set takes at most 2 arguments"),
        (
            'set(target = name, "a")',
            "span",
            Signal.TRACES,
            "a positional argument cannot follow a named one",
        ),
        ('set(name, valu = "a")', "span", Signal.TRACES, "set has no argument 'valu'"),
        (
            'set(name, set(name, "x"))',
            "span",
            Signal.TRACES,
            "editor 'set' cannot be used as a value",
        ),
        ("set(name, SHA256)", "span", Signal.TRACES, "'SHA256' is a function"),
        ("set(name, 1 + 1.5)", "span", Signal.TRACES, "cannot compute int + double"),
        (
            'set(spanevent.name, "x")',
            "span",
            Signal.TRACES,
            "spanevent paths are not available in the span context",
        ),
        (
            'set(log.body, "x")',
            "span",
            Signal.TRACES,
            "log paths are not available in the span context",
        ),
        (
            'set(attributes["x"], 1) where IsRootSpan()',
            "log",
            Signal.LOGS,
            "IsRootSpan is not available in the log context",
        ),
        (
            'set(attributes["x"], resource.cache["a"])',
            "log",
            Signal.LOGS,
            "only the log context's cache",
        ),
        ('set(name["x"], 1)', "span", Signal.TRACES, "'name' cannot be indexed"),
        ("set(attributes[true], 1)", "span", Signal.TRACES, "a key must be a string or an int"),
        ("set(name, 1 == 1)", "span", Signal.TRACES, "a condition cannot be used as a value"),
        (
            'set(name, ExtractPatterns(name, "(\\\\w+)"))',
            "span",
            Signal.TRACES,
            "at least one named capture group",
        ),
    ],
)
def test_compile_errors(statement, context, signal, message):
    with pytest.raises(StatementError) as e:
        compile_statement(statement, signal, context)
    assert message in str(e.value)


def test_paths_must_name_their_context_when_it_is_inferred():
    with pytest.raises(StatementError, match="needs a context prefix"):
        compile_statement('set(attributes["x"], 1)', Signal.TRACES, "span", require_prefix=True)
    compile_statement('set(span.attributes["x"], 1)', Signal.TRACES, "span", require_prefix=True)


@pytest.mark.parametrize(
    ("texts", "signal", "expected"),
    [
        (['set(span.attributes["x"], resource.attributes["y"])'], Signal.TRACES, "span"),
        (['set(resource.attributes["x"], "y")'], Signal.TRACES, "resource"),
        (['set(scope.attributes["x"], "y")'], Signal.LOGS, "scope"),
        (['set(spanevent.attributes["x"], span.name)'], Signal.TRACES, "spanevent"),
        (
            ['set(metric.description, "x")', 'set(datapoint.attributes["x"], "y")'],
            Signal.METRICS,
            "datapoint",
        ),
        (['set(log.body, "x")', 'set(resource.attributes["x"], "y")'], Signal.LOGS, "log"),
    ],
)
def test_context_inference_picks_the_innermost_context(texts, signal, expected):
    assert infer_context(signal, [parse(t) for t in texts]) == expected


def test_context_inference_errors():
    with pytest.raises(StatementError, match="cannot infer the context"):
        infer_context(Signal.TRACES, [parse('set(attributes["x"], 1)')])
    with pytest.raises(StatementError, match="cannot infer the context"):
        infer_context(Signal.LOGS, [parse('set(span.name, "x")')])


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ('set(attributes["x"], Substring(name, 0, 100))', "out of range"),
        (
            'set(attributes["x"], attributes["http.method"]["a"])',
            "a string cannot be indexed by a string",
        ),
        ('set(attributes["x"], attributes["tags"][5])', "index 5 out of range"),
        ('set(attributes["x"], ParseJSON(name))', "ParseJSON"),
        ('set(attributes["x"], 1 / (attributes["http.status_code"] - 200))', "division by zero"),
        (
            'set(attributes["x"], ConvertCase(attributes["ok"], "upper"))',
            "target must be a string, got bool",
        ),
        ('set(attributes["x"], 1) where ParseJSON("{}")', "returned map, not a boolean"),
        ('merge_maps(attributes, name, "upsert")', "source must be a map, got string"),
        ('keep_keys(attributes["http.method"], ["a"])', "target must be a map, got string"),
    ],
)
def test_runtime_errors_name_the_problem(statement, message):
    with pytest.raises(OttlError, match=message):
        run([statement], span_batch())
