"""Data sets: loaders (MovieLens-100k in GroupLens or RecBole format, generic CSV),
fetching into the cache, and the leave-one-out / user-group splits.

The names below load :mod:`audit.data.dataset` (and pandas) on first use, so importing
:mod:`audit.data.spec` to check a suite stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.data.dataset import Dataset, UserGroups, UserSequence, age_bucket, display_title

__all__ = ["Dataset", "UserGroups", "UserSequence", "age_bucket", "display_title"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from audit.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'audit.data' has no attribute {name!r}")
