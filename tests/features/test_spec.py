"""FeatureSpec: defaults, validation, and the dense transforms."""

from __future__ import annotations

import pytest

from freshrec.events.event import Field, FieldKind
from freshrec.events.simulator import Simulator
from freshrec.features.spec import (
    TRANSFORMS,
    FeatureSpec,
    default_specs,
)


def test_default_specs_maps_kinds_and_transforms():
    fields = [Field("user_id", FieldKind.CATEGORICAL), Field("genres", FieldKind.MULTI_CATEGORICAL),
              Field("price", FieldKind.DENSE), Field("age", FieldKind.DENSE)]
    specs = default_specs(fields, dim=8)
    assert [(s.name, s.kind, s.transform, s.dim) for s in specs] == [
        ("user_id", FieldKind.CATEGORICAL, "identity", 8),
        ("genres", FieldKind.MULTI_CATEGORICAL, "identity", 8),
        ("price", FieldKind.DENSE, "log1p", 8),
        ("age", FieldKind.DENSE, "log1p", 8),
    ]
    assert [s.is_sparse for s in specs] == [True, True, False, False]
    assert all(s.source_column == s.name and s.table_name == s.name for s in specs)
    assert all(s.missing == "id" and s.fill == 0.0 and s.column is None and s.table is None for s in specs)
    assert default_specs([]) == []
    assert default_specs(fields)[0].dim == 16


def test_default_specs_of_simulator_fields():
    specs = default_specs(Simulator.fields)
    assert [s.name for s in specs] == ["user_id", "item_id", "item_category", "user_segment", "hour", "price"]
    assert [s.transform for s in specs] == ["identity"] * 5 + ["log1p"]


def test_column_and_table_override_defaults():
    spec = FeatureSpec("clicked_item", FieldKind.CATEGORICAL, column="last_item", table="item_id")
    assert spec.source_column == "last_item" and spec.table_name == "item_id"


@pytest.mark.parametrize("kwargs", [{"transform": "log"}, {"transform": "LOG1P"}, {"transform": ""},
                                    {"missing": "skip"}, {"missing": "none"}, {"missing": ""}])
def test_invalid_transform_or_missing_raise(kwargs):
    with pytest.raises(ValueError, match="price"):
        FeatureSpec("price", FieldKind.DENSE, **kwargs)


def test_valid_options_accepted():
    assert TRANSFORMS == ("identity", "log1p")
    for transform in TRANSFORMS:
        for missing in ("id", "drop"):
            spec = FeatureSpec("x", FieldKind.DENSE, transform=transform, missing=missing)
            assert (spec.transform, spec.missing) == (transform, missing)


def test_spec_is_frozen_and_hashable():
    spec = FeatureSpec("x", FieldKind.CATEGORICAL)
    with pytest.raises(AttributeError):
        spec.dim = 4  # type: ignore[misc]
    same = FeatureSpec("x", FieldKind.CATEGORICAL)
    assert spec == same and hash(spec) == hash(same)

