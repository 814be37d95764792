"""Registries by name for adapters, variants, probes and executors.

Entries are lazy ``"module:attribute"`` targets, so importing the registry does
not import torch or transformers. Unknown names raise :class:`UnknownNameError`
with close matches and the full list of valid names.

Third-party packages add entries through entry points (as pytest plugins do), in the groups
``recaudit.adapters``, ``recaudit.probes`` and ``recaudit.variants``; in ``pyproject.toml``::

    [project.entry-points."recaudit.probes"]
    my-probe = "mypkg.probes:MyProbe"

They are read on first use, imported only when named. Built-in names win: a plugin entry
with a built-in's name is left out and reported by :meth:`Registry.plugin_problems`
(``recaudit list`` prints them); a plugin that fails to import is an error naming its
distribution.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, Iterator, TypeVar

from audit.errors import ConfigError, UnknownNameError

T = TypeVar("T")


#: Top-level packages of recaudit itself: a name registered from anywhere else is not a built-in.
BUILTIN_PACKAGES = frozenset({"audit", "attacks", "privacy", "dashboard"})


class Registry(Generic[T]):
    """A name -> object map whose values may be lazy ``"module:attr"`` strings."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T | str] = {}
        self._descriptions: dict[str, str] = {}
        self._origins: dict[str, str] = {}  # name -> distribution, for plugin entries
        self._registered_by: dict[str, str] = {}  # name -> "module <m>", for register() from outside recaudit
        self._problems: list[str] = []
        self._plugins_read = group is None

    def _read_plugins(self) -> None:
        """Add the entry points of ``group`` once (lazy targets; built-in names win)."""
        if self._plugins_read:
            return
        self._plugins_read = True
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            if ep.name in self._entries:
                owner = self._origins.get(ep.name, "recaudit")
                self._problems.append(f"{self.kind} {ep.name!r} from {dist} is ignored: {owner} already "
                                      f"registers that name (rename the entry point in {dist})")
                continue
            self._entries[ep.name] = ep.value
            self._descriptions[ep.name] = f"plugin from {dist}"
            self._origins[ep.name] = dist

    def plugin_problems(self) -> list[str]:
        """Plugin entries that were left out, and why."""
        self._read_plugins()
        return list(self._problems)

    def origin(self, name: str) -> str:
        """``recaudit`` for built-ins, else the distribution (entry points) or ``module <name>``
        (:meth:`register` called from code outside recaudit's packages) that registered ``name``."""
        self._read_plugins()
        return self._origins.get(name) or self._registered_by.get(name, "recaudit")

    def register(self, name: str, target: T | str, description: str = "") -> None:
        """Register ``target`` (an object or a ``"module:attr"`` string) under ``name``."""
        if name in self._entries and self._entries[name] != target:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target
        self._descriptions[name] = description
        module = target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", "")
        if module and module.split(".")[0] not in BUILTIN_PACKAGES:
            self._registered_by[name] = f"module {module}"  # at run time, by user code or a test

    def __contains__(self, name: object) -> bool:
        self._read_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        self._read_plugins()
        return sorted(self._entries)

    def description(self, name: str) -> str:
        self._check(name)
        return self._descriptions.get(name, "")

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` (close matches, the valid names) unless ``name`` is
        registered; imports nothing, so a suite's names are checked before any module loads."""
        self._check(name)

    def _check(self, name: str) -> None:
        self._read_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"
            )

    def get(self, name: str) -> T:
        """Return the object for ``name``, importing it on first use."""
        self._check(name)
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                if name not in self._origins:
                    raise
                raise ConfigError(f"{self.kind} {name!r} from the plugin distribution {self._origins[name]} "
                                  f"cannot be loaded ({target}): {type(exc).__name__}: {exc}; fix or "
                                  f"uninstall {self._origins[name]}") from None
            self._entries[name] = obj
            return obj
        return target


ADAPTERS: Registry[Any] = Registry("adapter", "recaudit.adapters")
VARIANTS: Registry[Any] = Registry("variant", "recaudit.variants")
PROBES: Registry[Any] = Registry("probe", "recaudit.probes")
EXECUTORS: Registry[Any] = Registry("executor")

# Built-in entries. Each domain package owns its modules; this table only names them.
EXECUTORS.register("local", "audit.executors:LocalExecutor", "in this process, one job after another (default)")
EXECUTORS.register("ray", "audit.executors:RayExecutor",
                   "each job a Ray task on a local instance or a cluster (address:)")

ADAPTERS.register("reference", "audit.adapters.reference:ReferenceAdapter",
                  "the built-in GPT-2-architecture recommender trained here on the data set")
ADAPTERS.register("hf", "audit.adapters.hf:HFAdapter",
                  "any local transformers causal-LM directory")
#: the ``hf`` adapter's class for each ``items`` form but ``titles`` (the adapter itself)
HF_ITEM_FORMS: Registry[Any] = Registry("hf items form")
HF_ITEM_FORMS.register("tokens", "audit.adapters.hf_items:ItemTokenAdapter", "one new token per catalog item")
ADAPTERS.register("openai", "audit.adapters.openai:OpenAIAdapter",
                  "any OpenAI-compatible HTTP endpoint (vLLM, Ollama, llama.cpp, hosted APIs)")
ADAPTERS.register("python", "audit.adapters.python:PythonAdapter",
                  "a plain Python callable given as module:function")
ADAPTERS.register("popularity", "audit.adapters.popularity:PopularityAdapter",
                  "most-popular-first from the data set's training interactions (a baseline to pair with)")

PROBES.register("utility", "audit.probes.utility:UtilityProbe",
                "HR@K, NDCG@K, MRR on leave-one-out with sampled negatives, and a popularity baseline")
PROBES.register("fairness", "audit.probes.fairness:CounterfactualFairnessProbe",
                "FaiRLLM/CFaiRLLM counterfactual prompts: Jaccard, SERP*, PRAG* -> SNSR/SNSV per attribute")
PROBES.register("leakage", "audit.probes.leakage:AttributeLeakageProbe",
                "PFRec-style attacker AUC/F1 predicting sensitive attributes from embeddings or lists")
PROBES.register("hallucination", "audit.probes.hallucination:HallucinationProbe",
                "open generation: compliance, hallucinated / duplicate / consumed items, grounded HR/NDCG")
PROBES.register("ranking", "audit.probes.ranking:CandidateRankingProbe",
                "candidate ranking: out-of-candidate rate, position, popularity and history-order bias")

VARIANTS.register("lora", "audit.llm.variant:LoraVariant",
                  "LoRA instruction fine-tuning (peft) of an hf causal LM on the users' sequences (frozen base)")
VARIANTS.register("fair-prompt", "audit.fairness.fair_prompt:FairPromptVariant",
                  "PFRec selective fair soft prompt with an adversarial discriminator (frozen model)")
VARIANTS.register("constrained-decoding", "audit.decoding.constrained:ConstrainedDecodingVariant",
                  "prefix-tree constrained generation: every generated slot is a catalog item")
VARIANTS.register("grounding", "audit.decoding.grounding:GroundingVariant",
                  "post-process black-box lists: replace each slot by its nearest catalog item, or drop it")

VARIANTS.register("dp", "privacy.dp:DPVariant",
                  "user-level DP-SGD (Opacus) fine-tuning of the public pretrained reference model")
VARIANTS.register("federated", "privacy.federated:FederatedVariant",
                  "FedAvg fine-tuning across simulated Flower clients (Ray); optional central DP")
VARIANTS.register("finetune", "privacy.finetune:FinetuneVariant",
                  "undefended baseline of the privacy variants: public pretrain, plain private fine-tune")
PROBES.register("privacy", "privacy.probe:PrivacyAccountingProbe",
                "accounted (epsilon, delta) of DP training, read from the training manifest")

PROBES.register("membership", "audit.probes.membership:MembershipInferenceProbe",
                "membership inference on users: loss, zlib, Min-K%, Min-K%++, reference-calibrated, list attack")
PROBES.register("canary", "audit.probes.canary:CanaryExposureProbe",
                "canary exposure by repetition count and one-run / Clopper-Pearson epsilon lower bounds")
PROBES.register("extraction", "audit.probes.extraction:ExtractionProbe",
                "history extraction (members vs held-out) and few-shot ID::Title data-set recall")
VARIANTS.register("canaries", "audit.memorisation.canaries:CanariesVariant",
                  "insert canary users (repeated 1/4/16 times, and randomly included audit canaries) into training")
VARIANTS.register("mia-reference", "audit.memorisation.calibration:MiaReferenceVariant",
                  "attach a calibration model for the calibrated membership attack: a reference model trained on "
                  "disjoint users, or (base: true) an hf fine-tune's untuned base")

VARIANTS.register("backdoor", "attacks.backdoor:BackdoorVariant",
                  "pre-training labels replaced by target items with probability r (Wu et al.); clean fine-tune or as-is")
VARIANTS.register("fake-users", "attacks.shilling:FakeUsersVariant",
                  "inject random / average / bandwagon / segment fake user profiles holding the target items")
VARIANTS.register("detect-fakes", "attacks.detection:DetectFakesVariant",
                  "flag suspected fake users (PCA-VarSelect or profile-popularity z-score) and drop them before training")
VARIANTS.register("item-text", "attacks.text_attack:ItemTextAttackVariant",
                  "rewrite the target items' titles within an edit budget (black-box search) at inference")
VARIANTS.register("canonical-titles", "attacks.text_attack:CanonicalTitlesVariant",
                  "ground every title to its canonical catalog text before the model sees it")
PROBES.register("poisoning", "attacks.probe:PoisoningProbe",
                "target-item exposure (HR/NDCG@K) per target and group, budget, stealth, detector precision/recall")
