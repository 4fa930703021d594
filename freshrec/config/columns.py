"""The column mapping of a CSV/Parquet interaction log (`source.columns`) and its label rule.

>>> parse_label("rating >= 4")
LabelRule(column='rating', op='>=', threshold=4.0)
>>> parse_label("clicked")
LabelRule(column='clicked', op=None, threshold=None)
>>> parse_label("rating => 4")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: bad label expression 'rating => 4': expected ... with OP one of >=, >, <=, <, ==, !=
>>> ColumnsSection(user="u", item="i", time="t", label="rating>3").label_rule().threshold
3.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from freshrec.config.section import Section

__all__ = ["LABEL_OPS", "ColumnsSection", "LabelRule", "parse_label"]

LABEL_OPS = (">=", ">", "<=", "<", "==", "!=")
_LABEL_EXPR = re.compile(r"^\s*(?P<column>[^<>=!]*?)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
                         r"(?P<value>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class LabelRule:
    """Where the label comes from: a 0/1 `column`, or `column <op> threshold`."""

    column: str
    op: str | None = None
    threshold: float | None = None


def parse_label(text: str) -> LabelRule:
    """Parse a label spec: a column name (0/1 values) or a threshold like `rating>=4`."""
    if not any(ch in text for ch in "<>=!"):
        if not text.strip():
            raise ValueError("label must name a column or be an expression like 'rating>=4'")
        return LabelRule(text.strip())
    match = _LABEL_EXPR.match(text)
    if match is None or not match["column"]:
        raise ValueError(f"bad label expression {text!r}: expected a 0/1 column name or "
                         f"'column OP number' with OP one of {', '.join(LABEL_OPS)}")
    return LabelRule(match["column"], match["op"], float(match["value"]))


class ColumnsSection(Section):
    """How the columns of a CSV/Parquet interaction log map onto events (`source.format: csv | parquet`)."""

    user: str = Field(min_length=1, description="The user id column")
    item: str = Field(min_length=1, description="The item id column")
    time: str = Field(min_length=1, description="The event time column (epoch seconds or ISO date-time)")
    label: str | None = Field(None, description="A 0/1 column or a rule like 'rating>=4' (null: every row "
                                                "is a positive)")
    categorical: tuple[str, ...] = Field((), description="Extra categorical feature columns")
    dense: tuple[str, ...] = Field((), description="Extra numeric feature columns")
    multi: tuple[str, ...] = Field((), description="Multi-valued categorical columns")
    separator: str = Field("|", min_length=1, description="Separator inside the multi-valued columns")
    delimiter: str | None = Field(None, min_length=1, description="CSV delimiter (null: detected from the header)")

    @field_validator("label")
    @classmethod
    def _valid_rule(cls, value: str | None) -> str | None:
        if value is not None:
            parse_label(value)
        return value

    @model_validator(mode="after")
    def _one_kind_per_column(self) -> ColumnsSection:
        named = [*self.categorical, *self.dense, *self.multi]
        if len(set(named)) < len(named):
            raise ValueError(f"a column is mapped to more than one feature kind: {named}")
        return self

    def label_rule(self) -> LabelRule | None:
        """The parsed `label`, or None when every row is a positive."""
        return None if self.label is None else parse_label(self.label)
