"""The metricstransform processor's config, with the OTel Collector contrib processor's keys:
a list of transforms, each selecting metrics by name and applying operations to them."""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from collector.core.config_types import ComponentConfig


class MatchType(enum.StrEnum):
    STRICT = "strict"
    REGEXP = "regexp"


class TransformAction(enum.StrEnum):
    UPDATE = "update"
    INSERT = "insert"
    COMBINE = "combine"
    GROUP = "group"


class OperationAction(enum.StrEnum):
    ADD_LABEL = "add_label"
    UPDATE_LABEL = "update_label"
    DELETE_LABEL_VALUE = "delete_label_value"
    TOGGLE_SCALAR_DATA_TYPE = "toggle_scalar_data_type"
    SCALE_VALUE = "experimental_scale_value"
    AGGREGATE_LABELS = "aggregate_labels"
    AGGREGATE_LABEL_VALUES = "aggregate_label_values"


class AggregationType(enum.StrEnum):
    SUM = "sum"
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    MEDIAN = "median"


class SubmatchCase(enum.StrEnum):
    LOWER = "lower"
    UPPER = "upper"


def _scalar_text(value: object) -> object:
    """Numbers and booleans written where text is expected (`new_value: 1`) as their text, as
    the Collector's config decoding reads them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]

# Go's RE2 also spells a named group (?<name>...); Python's re only knows (?P<name>...).
_GO_NAMED_GROUP = re.compile(r"(?<!\\)\(\?<(?![=!])")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A regular expression as written for the Collector (RE2 syntax, which Python's re reads
    but for the (?<name>...) spelling of named groups)."""
    return re.compile(_GO_NAMED_GROUP.sub("(?P<", pattern))


def _check_pattern(pattern: str) -> None:
    try:
        compile_pattern(pattern)
    except re.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None


class ValueAction(ComponentConfig):
    value: Text
    """A label value to rename. Required."""
    new_value: Text
    """What that value becomes; `{{version}}` is replaced with coldtail's version. Required."""


class Operation(ComponentConfig):
    action: OperationAction
    """What the operation does to the metric: add_label, update_label, delete_label_value,
    toggle_scalar_data_type (int points to double and double to int, truncating; gauges and
    sums), experimental_scale_value (multiply values by `experimental_scale`: gauges, sums, and
    histograms' sum, min, max, bounds and exemplars), aggregate_labels or
    aggregate_label_values. Required."""
    label: Text = ""
    """The label (data point attribute) to work on. Required for update_label,
    delete_label_value and aggregate_label_values."""
    new_label: Text = ""
    """update_label: the label's new name; add_label: the label to add (points that already
    have it keep their value). Required for add_label."""
    new_value: Text = ""
    """add_label: the added label's value; aggregate_label_values: the value the aggregated
    values become. `{{version}}` is replaced with coldtail's version. Required for both."""
    value_actions: list[ValueAction] = Field(default_factory=list)
    """update_label: label values to rename, each `{value, new_value}`. update_label needs
    `new_label`, `value_actions` or both."""
    label_value: Text | None = None
    """delete_label_value: points whose `label` has this value are deleted. Required there."""
    label_set: list[Text] | None = None
    """aggregate_labels: the labels to keep; the others are removed and the points that then
    have the same labels (and timestamps) are aggregated into one. An empty list keeps no
    label. Required for aggregate_labels."""
    aggregated_values: list[Text] = Field(default_factory=list)
    """aggregate_label_values: the values of `label` that become `new_value`; points that then
    have the same labels (and timestamps) are aggregated into one. Required there, at least
    one."""
    aggregation_type: AggregationType | None = None
    """How aggregated gauge and sum points combine: sum, mean, min, max, count (the number of
    points) or median; int points stay ints (mean and median truncate). Histograms with the
    same bounds are always summed (counts, buckets, sum, min, max); summaries are left as they
    are. Required for aggregate_labels and aggregate_label_values."""
    experimental_scale: float = 0.0
    """experimental_scale_value: the factor values are multiplied by (int values are truncated
    to ints again). Required there, not 0."""

    @model_validator(mode="after")
    def _required(self):
        missing = _missing(self)
        if missing:
            raise ValueError(f"{missing} when action is {self.action.value}")
        return self


def _missing(op: Operation) -> str | None:
    """What `op` lacks for its action, worded for the error message."""
    action = op.action
    if action is OperationAction.ADD_LABEL:
        if not op.new_label:
            return "new_label is required"
        if not op.new_value:
            return "new_value is required"
    elif action is OperationAction.UPDATE_LABEL:
        if not op.label:
            return "label is required"
        if not op.new_label and not op.value_actions:
            return "new_label or value_actions is required"
    elif action is OperationAction.DELETE_LABEL_VALUE:
        if not op.label:
            return "label is required"
        if op.label_value is None:
            return "label_value is required"
    elif action is OperationAction.SCALE_VALUE:
        if op.experimental_scale == 0:
            return "experimental_scale is required (not 0)"
    elif action is OperationAction.AGGREGATE_LABELS:
        if op.label_set is None:
            return "label_set is required"
        if op.aggregation_type is None:
            return "aggregation_type is required"
    elif action is OperationAction.AGGREGATE_LABEL_VALUES:
        for name in ("label", "aggregated_values", "new_value", "aggregation_type"):
            if not getattr(op, name):
                return f"{name} is required"
    return None


class Transform(ComponentConfig):
    match_type: MatchType = MatchType.STRICT
    """How `include` (and the values of `experimental_match_labels`) match: strict (equal) or
    regexp (a regular expression found anywhere in the name or value; anchor it with ^...$).
    Default strict."""
    include: str
    """The metric name (strict) or pattern (regexp) selecting the metrics to transform.
    Required."""
    experimental_match_labels: dict[str, Text] = Field(default_factory=dict)
    """Only data points whose labels match: label -> value (or pattern with regexp). A point
    without the label matches only a value that matches the empty string. With action update,
    a metric is renamed, aggregated or has labels added or points deleted only when all its
    points match; label updates, scaling and type toggles touch the matching points. Empty:
    every point."""
    action: TransformAction
    """update (change the matching metrics in place), insert (transform a copy, added to the
    batch), combine (merge the matching metrics into one new metric, removing them; they must
    share type, unit, label keys, temporality and monotonicity) or group (move the matching
    metrics to a new resource, a copy of theirs with `group_resource_labels` added). Required."""
    new_name: str = ""
    """The metric's new name. With regexp, `$1`, `${1}`, `$name` or `${name}` are the
    include pattern's capture groups (write `$$` for `$` in config files). Required for insert
    and combine. Empty: the name stays."""
    aggregation_type: AggregationType | None = None
    """combine: how points of the combined metrics with the same labels and timestamps merge
    (sum, mean, min, max, count or median). Unset: the first such point is kept."""
    submatch_case: SubmatchCase | None = None
    """combine: the case of the label values made from the include pattern's capture groups:
    lower or upper. Unset: as matched."""
    group_resource_labels: dict[str, Text] | None = None
    """group: resource attributes set on the new resource. Required for group."""
    operations: list[Operation] = Field(default_factory=list)
    """Operations applied in order to each resulting metric."""

    @field_validator("include")
    @classmethod
    def _include(cls, include: str, info: ValidationInfo) -> str:
        if not include:
            raise ValueError("must not be empty")
        if info.data.get("match_type") is MatchType.REGEXP:
            _check_pattern(include)
        return include

    @field_validator("experimental_match_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.data.get("match_type") is MatchType.REGEXP:
            for pattern in labels.values():
                _check_pattern(pattern)
        return labels

    @model_validator(mode="after")
    def _required(self):
        if self.action in (TransformAction.INSERT, TransformAction.COMBINE) and not self.new_name:
            raise ValueError(f"new_name is required when action is {self.action.value}")
        if self.action is TransformAction.GROUP and self.group_resource_labels is None:
            raise ValueError("group_resource_labels is required when action is group")
        return self


class Config(ComponentConfig):
    transforms: list[Transform] = Field(default_factory=list)
    """The transforms, applied in order to the metrics of each resource and scope, each to the
    result of the ones before; each is `{include, match_type, experimental_match_labels, action,
    new_name, aggregation_type, submatch_case, group_resource_labels, operations}`. Empty:
    metrics pass unchanged."""
