"""The ``privacy`` probe: the accounted (epsilon, delta) of a recommender trained with DP.

A pure read of what training recorded: the privacy account of every stage in the model's
manifest (``info["manifest"]["stages"][*]["summary"]["privacy"]``, written by the ``dp``
and ``federated`` trainers; or the reference adapter's ``info["training"][*]["privacy"]``)
or ``info["privacy"]`` (a recommender that reports its own account). Metrics ``epsilon`` and ``delta`` have ``n`` = private records (users, for
user-level DP) and no CI (accounted, not sampled; unit ``accounted``). Several DP stages
compose by basic composition (epsilons and deltas add; said in ``details``). A recommender
trained without DP is skipped with the reason; the dashboard's utility-vs-epsilon series
joins this probe's ``epsilon`` with the utility probe's HR@K per recommender.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from audit.interface import Recommender
from audit.probes.base import Probe, ProbeConfig, ProbeContext
from audit.results import Metric, MetricNames, MetricSpec, ProbeResult

UNIT = "accounted"
#: declared meanings: accounted (exact) figures, not sampled
PRIVACY_SPECS: dict[str, MetricSpec] = {
    "epsilon": MetricSpec("lower", range=(0.0, None), unit="epsilon (accounted; adjacency in details)", sampled=False,
                          meaning="differential-privacy epsilon of the training run's account"),
    "delta": MetricSpec("lower", range=(0.0, 1.0), unit="delta (accounted)", sampled=False,
                        meaning="the account's delta"),
}


def privacy_accounts(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every privacy account a recommender's ``info`` carries, with the stage it came from."""
    accounts: list[dict[str, Any]] = []
    own = info.get("privacy")
    if isinstance(own, Mapping) and "epsilon" in own:
        accounts.append({"stage": None, **own})
    manifest = info.get("manifest")
    if isinstance(manifest, Mapping):
        stages = [(s.get("name"), s.get("summary")) for s in manifest.get("stages", []) or []
                  if isinstance(s, Mapping)]
    else:  # the reference adapter's ``info["training"]``: one summary per stage
        stages = [(None, s) for s in info.get("training", []) or []]
    for name, summary in stages:
        account = summary.get("privacy") if isinstance(summary, Mapping) else None
        if isinstance(account, Mapping) and "epsilon" in account:
            accounts.append({"stage": name, **account})
    return accounts


class PrivacyAccountingProbe(Probe):
    name: ClassVar[str] = "privacy"
    description: ClassVar[str] = "accounted (epsilon, delta) of DP training, from the training manifest"
    requires: ClassVar[frozenset[str]] = frozenset()
    Config = ProbeConfig
    metric_specs: ClassVar[dict[str, MetricSpec]] = PRIVACY_SPECS

    @classmethod
    def emitted_metrics(cls, config: ProbeConfig) -> MetricNames:
        """``epsilon`` and ``delta``."""
        return MetricNames(tuple(PRIVACY_SPECS))

    def run(self, rec: Recommender, ctx: ProbeContext) -> ProbeResult:
        accounts = privacy_accounts(rec.info)
        if not accounts:
            return ProbeResult.skipped(f"{rec.name} was trained without differential privacy "
                                       "(no privacy account in its info or training manifest)")
        eps = sum(float(a["epsilon"]) for a in accounts)
        delta = sum(float(a["delta"]) for a in accounts)
        n = min(int(a.get("n_private", 0)) for a in accounts)
        units = sorted({str(a.get("unit", "?")) for a in accounts})
        metrics = {"epsilon": Metric(eps, n=n, ci=None, unit=UNIT).declare(PRIVACY_SPECS["epsilon"]),
                   "delta": Metric(delta, n=n, ci=None, unit=UNIT).declare(PRIVACY_SPECS["delta"])}
        details: dict[str, Any] = {
            "privacy_unit": units[0] if len(units) == 1 else units,
            "accounts": accounts,
            "composition": "single DP stage" if len(accounts) == 1 else "basic composition over DP stages",
        }
        if units != ["user"]:
            details["warning"] = "not user-level DP: one record is one training example, not one user"
        adjacency = sorted({adjacency_of(a) for a in accounts})
        details["adjacency"] = adjacency[0] if len(adjacency) == 1 else adjacency
        covered = [f"the {a.get('n_private', '?')} users of stage {a.get('stage')!r}" if a.get("stage")
                   else f"{a.get('n_private', '?')} private users" for a in accounts]
        details["covers"] = ("epsilon covers only " + "; ".join(covered) + ". Users of stages trained without DP "
                             "(e.g. the public pretrain group) are NOT covered by this guarantee")
        details["randomness"] = randomness_note(accounts)
        return ProbeResult(status="pass", metrics=metrics, details=details)


def adjacency_of(account: Mapping[str, Any]) -> str:
    """The neighbouring relation an account's epsilon is for: ``replace-one`` (federated,
    sampling without replacement) or ``add/remove`` (DP-SGD with Poisson sampling)."""
    text = f"{account.get('mechanism', '')} {account.get('accountant', '')}".lower()
    return "replace-one" if "replace-one" in text or "rdp-wor" in text else "add/remove"


def randomness_note(accounts: list[dict[str, Any]]) -> str:
    """What the guarantee assumes about the training randomness: nothing when every account
    drew its sampling and noise from a cryptographic RNG (``randomness: secure``), else that
    the seed of the seeded ones stays secret (accounts from before the field count as seeded)."""
    seeded = [a for a in accounts if a.get("randomness", "seeded") != "secure"]
    if not seeded:
        return ("the sampling and noise came from a cryptographic RNG (Opacus secure_mode): the guarantee does "
                "not rest on a secret seed")
    stages = ", ".join(repr(a.get("stage")) for a in seeded if a.get("stage")) or "the DP training"
    return (f"the sampling and noise of {stages} were seeded for reproducibility: the guarantee assumes that "
            "seed stays secret (the dp variant's secure_mode: true draws them from a cryptographic RNG instead, "
            "at the cost of reproducibility; it needs the torchcsprng package)")
