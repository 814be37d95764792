"""Who a model trained on: members and clean non-members for the memorisation probes.

A recommender says which users it trained on: ``info["trained_users"]`` (a list of user
ids), or its training manifest (the reference model's ``manifest.json``, as the adapter's
``manifest`` attribute or ``info["manifest"]``), whose ``stages[*].users`` list every user
of every stage. Canary users are left out. A
recommender that says nothing (an HTTP endpoint, a local LM trained elsewhere) is assumed
to follow the data set's default split, ``dataset.user_groups(seed=0)``: members =
``trained`` users, non-members = ``heldout`` users; the result says so.

Non-members are users the audited model never trained on; when a calibration reference
model is attached (see :mod:`audit.memorisation.calibration`), users *it* trained on are
removed from both groups, so the reference-calibrated attack scores only users unseen by
the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import Recommender
from audit.memorisation.canaries import is_canary_user

def model_manifest(rec: Recommender) -> Mapping[str, Any] | None:
    """The training manifest a recommender carries (its declared ``manifest``, else
    ``info["manifest"]``), or None."""
    manifest = rec.manifest
    if not isinstance(manifest, Mapping):
        manifest = rec.info.get("manifest")
    return manifest if isinstance(manifest, Mapping) else None


def declared_trained_users(rec: Recommender, stage: str | None = None) -> set[str] | None:
    """Users the recommender says it trained on (canaries excluded), or None when it does not say.

    ``stage`` keeps only the users of that training stage of the manifest (e.g. ``finetune``:
    the private data of a pretrain -> fine-tune recipe); a stage the manifest lacks is an error."""
    users = rec.info.get("trained_users") if stage is None else None
    if users is None:
        manifest = model_manifest(rec)
        if manifest is None or "stages" not in manifest:
            return None
        stages = manifest["stages"]
        if stage is not None:
            names = [s.get("name") for s in stages]
            if stage not in names:
                raise ConfigError(f"member_stage {stage!r}: {rec.name} trained in stages {names}")
            stages = [s for s in stages if s.get("name") == stage]
        users = [u for s in stages for u in s.get("users", [])]
    return {str(u) for u in users if not is_canary_user(str(u))}


def calibration_reference(rec: Recommender) -> Recommender | None:
    """The reference model a calibration variant attached to ``rec``, if any."""
    ref = rec.calibration_reference
    return ref if isinstance(ref, Recommender) else None


@dataclass(frozen=True)
class MembershipSplit:
    """Members and non-members (sorted user ids), where the membership came from, and how many
    users were left out of both groups (a calibration model's users, other stages' users)."""

    members: tuple[str, ...]
    nonmembers: tuple[str, ...]
    source: str
    excluded: int = 0

    @property
    def assumed(self) -> bool:
        """True when the recommender did not declare whom it trained on (membership assumed)."""
        return self.source.startswith("assumed")


def membership_split(rec: Recommender, dataset: Dataset, *, exclude: Iterable[str] = (),
                     min_items: int = 2, member_stage: str | None = None) -> MembershipSplit:
    """Members = users ``rec`` trained on; non-members = every other user of the data set.

    Users in ``exclude`` (e.g. the calibration reference's training users) and users with
    fewer than ``min_items`` training items are left out of both groups. With
    ``member_stage``, members are that stage's users and users of other stages are left out."""
    declared = declared_trained_users(rec)
    if declared is not None and member_stage is not None:
        staged = declared_trained_users(rec, member_stage) or set()
        exclude = set(exclude) | (declared - staged)
        declared = staged
    if declared is not None:
        trained, source = declared, "declared by the recommender" + (
            f" (members: stage {member_stage!r})" if member_stage else "")
    else:
        groups = dataset.user_groups(seed=0)
        trained = set(groups.trained)
        source = "assumed: the data set's default split (the recommender does not say whom it trained on)"
    excluded = set(map(str, exclude))
    eligible = [u for u in dataset.user_ids() if len(dataset.sequences[u].train) >= min_items]
    members = tuple(u for u in eligible if u in trained and u not in excluded)
    nonmembers = tuple(u for u in eligible if u not in trained and u not in excluded)
    return MembershipSplit(members, nonmembers, source, excluded=len(excluded & set(dataset.user_ids())))


def sample(users: Iterable[str], n: int | None, seed: int) -> list[str]:
    """A seeded sample of at most ``n`` users (all when n is None), in the given order."""
    pool = list(users)
    if n is None or n >= len(pool):
        return pool
    keep = set(np.random.default_rng(seed).choice(len(pool), size=n, replace=False).tolist())
    return [u for i, u in enumerate(pool) if i in keep]
