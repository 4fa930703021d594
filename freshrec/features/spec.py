"""`FeatureSpec`: how one source column becomes model input (ids or floats).

>>> from freshrec.events.event import Field, FieldKind
>>> specs = default_specs([Field("user_id", FieldKind.CATEGORICAL),
...                        Field("genres", FieldKind.MULTI_CATEGORICAL), Field("age", FieldKind.DENSE)])
>>> [(s.name, s.kind.value, s.transform) for s in specs]
[('user_id', 'categorical', 'identity'), ('genres', 'multi_categorical', 'identity'), ('age', 'dense', 'log1p')]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from freshrec.events.event import Field, FieldKind

TRANSFORMS = ("identity", "log1p")


@dataclass(frozen=True)
class FeatureSpec:
    """One model input.

    - `column`: the source column (default: `name`);
    - `table`: the embedding table, which is also the hashing salt, so fields sharing a table
      share ids (default: `name`);
    - `dim`: the embedding width for ids;
    - `transform`: for dense fields, `identity` or `log1p` (signed: sign(x) * log(1 + |x|));
    - `missing`: for ids, `id` (null/empty values get the field's missing id) or `drop` (no id);
    - `fill`: for dense fields, the value of a missing number.
    """

    name: str
    kind: FieldKind
    column: str | None = None
    table: str | None = None
    dim: int = 16
    transform: str = "identity"
    missing: str = "id"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"{self.name}: transform {self.transform!r} is not one of {TRANSFORMS}")
        if self.missing not in ("id", "drop"):
            raise ValueError(f"{self.name}: missing {self.missing!r} is not 'id' or 'drop'")

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def is_sparse(self) -> bool:
        return self.kind is not FieldKind.DENSE


def default_specs(fields: Iterable[Field], dim: int = 16) -> list[FeatureSpec]:
    """One spec per source field; dense fields get the signed log1p transform."""
    return [FeatureSpec(f.name, f.kind, dim=dim,
                        transform="log1p" if f.kind is FieldKind.DENSE else "identity")
            for f in fields]
