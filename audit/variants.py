"""Variants: named ways of building a recommender (trained differently, or wrapped).

A variant either changes how a trainable adapter trains (``trains = True``: it
edits the adapter's training recipe, e.g. DP-SGD, federated, poisoned data,
canaries) or wraps a built recommender (``trains = False``: e.g. constrained
decoding, grounding, a fair soft prompt loaded around a frozen model).
Variants register in :data:`audit.registry.VARIANTS` under the name suite files use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from audit.config import StrictConfig
from audit.interface import Recommender

if TYPE_CHECKING:
    from audit.data.dataset import Dataset


@dataclass
class BuildContext:
    """What building a recommender may use: the data set, a model cache directory, a seed,
    and the suite file's directory (relative paths in a recommender entry resolve against it;
    None outside a suite run). ``audit_users``: the run's audited users; a variant that fits
    something on users (a defense's prompt, an attack's search) uses only users outside them,
    so no audit is in-sample (None outside a suite run: no restriction)."""

    dataset: Dataset
    cache_dir: Path
    seed: int = 0
    progress: bool = True
    suite_dir: Path | None = None
    audit_users: frozenset[str] | None = None


class Variant:
    """Base class. Subclasses set ``name``, ``Config`` and override one of the hooks."""

    name: ClassVar[str] = "variant"
    Config: ClassVar[type[StrictConfig]] = StrictConfig
    #: True when the variant changes training (it edits the adapter's recipe).
    trains: ClassVar[bool] = False
    #: capabilities the adapter must declare for this variant to apply (checked at load, listed by
    #: ``recaudit list``). Empty: training variants need ``train-stages`` (the staged recipe
    #: with pretrain / fine-tune stages and the private trainers, the reference's today), wrapping
    #: variants need nothing (they wrap whatever the recommender offers).
    requires: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def required_capabilities(cls) -> frozenset[str]:
        if cls.requires:
            return cls.requires
        return frozenset({"train-stages"}) if cls.trains else frozenset()

    def __init__(self, config: StrictConfig) -> None:
        self.config = config

    #: True when building fits something on users (a defense's prompt, an attack's search): the runner
    #: then gives it only users outside those the recommender's probes report on (``ctx.audit_users``),
    #: checks :meth:`preflight` before any job runs, and keys the recommender's cached results on them.
    fits_on_users: ClassVar[bool] = False

    def preflight(self, ctx: BuildContext) -> None:
        """Raise :class:`~audit.errors.ConfigError` when this variant cannot be built in ``ctx`` (e.g.
        no users left to fit on outside ``ctx.audit_users``); called after the data set is loaded and
        before any job runs, so the run stops with exit 2 instead of failing an hour in. Must be cheap."""

    def modify_recipe(self, recipe: Any, ctx: BuildContext) -> Any:
        """Return the training recipe this variant trains with (training variants only)."""
        return recipe

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        """Return the recommender users audit (wrapping variants only)."""
        return rec

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.model_dump(mode="json")}
