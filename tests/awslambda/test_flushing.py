"""COLDTAIL_FLUSH: the strategies' names and the errors for what is not one."""

import pytest

from collector.awslambda.extension.flushing import Strategy, parse_strategy


@pytest.mark.parametrize(
    ("text", "strategy"),
    [
        ("", Strategy("background")),
        ("background", Strategy("background")),
        (" end-of-invocation ", Strategy("end-of-invocation")),
        ("shutdown", Strategy("shutdown")),
        ("age:30s", Strategy("age", 30.0)),
        ("age:1.5m", Strategy("age", 90.0)),
        ("age:250ms", Strategy("age", 0.25)),
    ],
)
def test_strategies(text, strategy):
    assert parse_strategy(text) == strategy


@pytest.mark.parametrize("text", ["always", "age", "age:", "age:ten", "age:30", "age:-1s"])
def test_what_is_not_a_strategy_says_what_is(text):
    with pytest.raises(ValueError, match=r"expected background, end-of-invocation, shutdown or"):
        parse_strategy(text)


def test_a_strategy_reads_as_written():
    assert str(parse_strategy("age:30s")) == "age:30s"
    assert str(parse_strategy("end-of-invocation")) == "end-of-invocation"
