"""`Section`: the base of every part of the YAML config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are frozen; the validators are built on
    first use (so `freshrec --help` does not wait for them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
