"""LoRA fine-tuning of an ``hf`` model on the shared training path, and its cache.

The :class:`LoraRecipe` is built from the model-independent pieces of :mod:`audit.training.recipe`
(user groups, stages, sequence transforms, trainers by name) plus the LoRA options and how
examples are drawn. :class:`LoraModel` is the frozen base with LoRA attached as a
:class:`~audit.training.protocol.TrainableModel`; :func:`audit.training.stages.run_stages` trains
it with the stages' trainers through :class:`~audit.llm.trainable.LoraTrainable`. The trained
LoRA weights are cached under ``<cache_dir>/lora/<key>/`` (``adapter.safetensors`` +
``manifest.json``) by :class:`audit.training.identity.TrainedPartCache`: key = SHA-256 of the
recipe, the base model's identity (weights, tokenizer, prompt format), the data fingerprint and
the training code; a directory counts only when its manifest says complete, and it is written
under a temporary name and renamed, so an interrupted run never leaves half a model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

from audit.llm.examples import LLMStageData
from audit.llm.lora import ADAPTER_FILE, LoraOptions, attach_lora, load_lora_state, read_adapter, resolve_options
from audit.llm.trainable import LoraTrainable
from audit.training.identity import Resume, TrainedPartCache, train_cached, trained_key, training_code_version
from audit.training.recipe import RecipeOps, SequenceTransform, StageSpec
from audit.training.stages import recipe_groups

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

LORA_STAGE = "lora"
#: the stage and user group a poisoned pre-training LoRA stage trains on (see ``with_public_pretrain``)
PUBLIC_STAGE, PUBLIC_GROUP = "pretrain", "pretrain"
#: the modules whose code decides the trained LoRA weights (besides audit.training)
TRAINING_MODULES = ("audit.llm.examples", "audit.llm.trainable", "audit.llm.training", "audit.llm.lora")


@dataclass(frozen=True)
class LoraRecipe(RecipeOps):
    """How an ``hf`` model is LoRA-tuned (with the data set and the base model, its cache key).

    ``history``: history items per prompt (the adapter's window); ``targets``: answer items per
    example (1..k); ``examples_per_user``: windows per user per epoch; ``attribute_dropout``:
    chance (0..1) each profile attribute is hidden in one example; ``score_k``: the k written
    into training prompts (the adapter scores and embeds with the same prompt)."""

    lora: LoraOptions = field(default_factory=LoraOptions)
    stages: tuple[StageSpec, ...] = (StageSpec(name=LORA_STAGE, users="trained", epochs=1, lr=1e-3,
                                               batch_size=8, warmup=0.05, catalog_titles=False),)
    sequence_transforms: tuple[SequenceTransform, ...] = ()
    split_seed: int = 0
    pretrain_share: float = 0.5
    heldout_share: float = 0.1
    history: int = 10
    targets: int = 10
    examples_per_user: int = 1
    attribute_dropout: float = 0.5
    score_k: int = 10
    seed: int = 0

    private_stage_names: ClassVar[tuple[str, ...]] = (LORA_STAGE,)
    #: the LoRA variant's options this recipe's examples read
    example_options: ClassVar[frozenset[str]] = frozenset({"targets", "examples_per_user"})

    def with_private_stage(self, *, variant: str) -> tuple["LoraRecipe", str]:
        """The recipe as it is and its LoRA stage: the base checkpoint is the public part, the LoRA
        stage trains on the private users (where fake users, their detection and canaries go)."""
        self._require_private_stage(variant)
        return self, LORA_STAGE

    def _require_private_stage(self, variant: str) -> None:
        from audit.errors import ConfigError

        if LORA_STAGE not in [s.name for s in self.stages]:
            raise ConfigError(f"variant {variant!r}: this recipe has no private LoRA stage (a backdoor with "
                              f"finetune: false uses the poisoned checkpoint as it is, trained on the public "
                              f"users only); set finetune: true on the backdoor variant")

    def with_public_pretrain(self, *, variant: str, pretrain_epochs: int | None, finetune_epochs: int | None,
                             keep_private: bool) -> tuple["LoraRecipe", str]:
        """A poisoned-checkpoint form of the recipe (Wu et al.'s pre-training backdoor on an LLM):
        with ``keep_private``, a ``pretrain`` LoRA stage on the ``pretrain`` user group (the stage a
        backdoor poisons; the LoRA stage's settings, ``pretrain_epochs``) and then the LoRA stage on
        the ``finetune`` group, training the *same* LoRA weights further (the clean fine-tune of the
        poisoned checkpoint, ``finetune_epochs``); without, that ``pretrain`` stage alone: the
        poisoned checkpoint used as it is. The as-is recipe is the first stage of the fine-tuned one,
        so the LoRA cache trains the poisoned checkpoint once for both. Returns (recipe, the public
        stage's name)."""
        from audit.errors import ConfigError

        names = [s.name for s in self.stages]
        lora = self.stage(LORA_STAGE)
        if names != [LORA_STAGE]:
            raise ConfigError(f"variant {variant!r} given twice (the LoRA recipe already has a public pre-training "
                              f"stage, stages {names}); use one {variant} variant per recommender")
        pre = dataclasses.replace(lora, name=PUBLIC_STAGE, users=PUBLIC_GROUP, trainer="plain", options=(),
                                  **_epochs(pretrain_epochs))
        private = [t.name for t in self.sequence_transforms if t.applies_to(LORA_STAGE, self)]
        if not keep_private:
            if lora.trainer != "plain" or private:
                why = f"set its trainer to {lora.trainer!r}" if lora.trainer != "plain" else f"edit it ({private})"
                raise ConfigError(f"variant {variant!r}: finetune: false uses the poisoned checkpoint as it is, "
                                  f"with no private LoRA stage, but other variants {why}; set finetune: true")
            return dataclasses.replace(self, stages=(pre,)), PUBLIC_STAGE
        fine = dataclasses.replace(lora, users="finetune", **_epochs(finetune_epochs))
        return dataclasses.replace(self, stages=(pre, fine)), PUBLIC_STAGE

    def private_finetune(self, *, variant: str, pretrain_epochs: int | None, **finetune: Any) -> "LoraRecipe":
        """The LoRA stage as the private fine-tune (the base checkpoint is the public part): its
        fields replaced by ``finetune`` (e.g. ``trainer='dp', options={...}``)."""
        from audit.errors import ConfigError

        if pretrain_epochs is not None:
            raise ConfigError(f"variant {variant!r}: pretrain_epochs does not apply to an hf model (its public "
                              "pretraining is its base checkpoint); drop it")
        self._require_private_stage(variant)
        current = self.stage(LORA_STAGE).trainer
        if current != "plain" and "trainer" in finetune:
            raise ConfigError(f"variant {variant!r}: the LoRA stage already uses trainer {current!r} (from another "
                              "variant); apply one privacy variant per recommender")
        changes = {k: v for k, v in finetune.items() if k != "catalog_titles"}
        return self.replace_stage(LORA_STAGE, **changes)  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        return {"lora": self.lora.model_dump(mode="json"),
                "stages": [s.to_json() for s in self.stages],
                "sequence_transforms": [t.to_json() for t in self.sequence_transforms],
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("lora", "stages", "sequence_transforms")}}


def _epochs(epochs: int | None) -> dict[str, int]:
    return {} if epochs is None else {"epochs": epochs}


@dataclass
class BaseModelParts:
    """What training needs from the ``hf`` adapter: the frozen base model (on its device), how it
    writes prompts and answers, and its identity (weights + tokenizer + prompt format digest)."""

    model: Any
    encode_prompt: Callable[..., list[int]]
    encode_answer: Callable[..., list[int]]
    pad_id: int
    identity: str


class LoraModel:
    """The frozen base with LoRA attached (:func:`~audit.llm.lora.attach_lora`), as the training
    path sees it: its trainable LoRA weights and its instruction examples for a stage."""

    training_modules: tuple[str, ...] = TRAINING_MODULES

    def __init__(self, recipe: LoraRecipe, base: BaseModelParts, titles: Mapping[str, str]) -> None:
        self.recipe, self.base, self.titles = recipe, base, dict(titles)
        self.identity: str | None = base.identity
        self.peft_model = attach_lora(base.model, recipe.lora, seed=recipe.seed)
        self._trainable = LoraTrainable(self.peft_model)

    def trainable(self) -> LoraTrainable:
        return self._trainable

    def before_stage(self, index: int, stage: StageSpec, sequences: Mapping[str, Sequence[str]]) -> None:
        return None

    def stage_data(self, stage: StageSpec, sequences: Mapping[str, Sequence[str]],
                   profiles: Mapping[str, Mapping[str, str]]) -> LLMStageData:
        r = self.recipe
        return LLMStageData({str(u): tuple(map(str, s)) for u, s in sequences.items()},
                            {u: dict(p) for u, p in profiles.items()}, self.titles,
                            self.base.encode_prompt, self.base.encode_answer, history=r.history,
                            targets=r.targets, examples_per_user=r.examples_per_user,
                            attribute_dropout=r.attribute_dropout, pad_id=self.base.pad_id)

    def manifest(self, recipe: LoraRecipe, dataset: "Dataset", records: list[dict[str, Any]],
                 seconds: float) -> dict[str, Any]:
        return training_manifest(recipe, dataset, self.base.identity, self._trainable, records, seconds)


def training_manifest(recipe: LoraRecipe, dataset: "Dataset", base_identity: str, trainable: Any,
                      records: list[dict[str, Any]], seconds: float, **extra: Any) -> dict[str, Any]:
    """The manifest of an ``hf`` fine-tune (title LoRA or item tokens): recipe, base, data, user groups,
    stage records, trained values, seconds and threads, plus ``extra`` fields."""
    import torch

    groups = recipe_groups(recipe, dataset)
    n_trainable = sum(p.numel() for _, p in trainable.named_trainable())
    return {"recipe": recipe.to_json(), "base": base_identity, **extra,
            "data": {"name": dataset.name, "fingerprint": dataset.fingerprint},
            "groups": {"seed": recipe.split_seed, "pretrain": len(groups.pretrain),
                       "finetune": len(groups.finetune), "heldout": len(groups.heldout)},
            "stages": [dict(r) for r in records], "trainable_parameters": int(n_trainable),
            "train_seconds": round(seconds, 2), "threads": torch.get_num_threads()}


@dataclass(frozen=True)
class TrainedStateEntry:
    """An ``hf`` fine-tune's cache entry (an :class:`~audit.training.identity.EntryLayout`): the
    trained state as ``state_file`` (safetensors) + ``manifest.json``, complete once the manifest says so."""

    state_file: str = ADAPTER_FILE

    def is_complete(self, directory: Path) -> bool:
        try:
            return bool(self.read_manifest(directory).get("complete")) and (Path(directory) / self.state_file).is_file()
        except (OSError, ValueError):
            return False

    def write(self, directory: Path, trainable: Any, manifest: Mapping[str, Any]) -> None:
        from safetensors.torch import save_file

        save_file(trainable.trained_state(), str(Path(directory) / self.state_file))
        (Path(directory) / "manifest.json").write_text(json.dumps({**manifest, "complete": True}, indent=1))

    def read_state(self, directory: Path) -> Mapping[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(Path(directory) / self.state_file))

    def read_manifest(self, directory: Path) -> dict[str, Any]:
        return json.loads((Path(directory) / "manifest.json").read_text())


#: the title LoRA's entry: ``adapter.safetensors`` + ``manifest.json``
LoraEntry = TrainedStateEntry(ADAPTER_FILE)


def recipe_key(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset") -> str:
    """The cache key of ``recipe`` trained on ``base`` with ``dataset``."""
    return trained_key(recipe, base.identity, dataset.fingerprint, training_code_version(recipe, TRAINING_MODULES))


def train_or_load_lora(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", cache_dir: Path, *,
                       progress: bool = False) -> tuple[Any, dict[str, Any], Path, bool]:
    """The LoRA model for (recipe, base, data): loaded from ``cache_dir/lora/<key>`` or trained and
    saved there. A multi-stage recipe also saves what it is after each earlier stage (under that
    prefix's own key) and resumes from the longest such prefix already cached: a backdoored
    checkpoint used as it is and the same checkpoint fine-tuned share their first stage. Returns
    (peft model in eval mode, manifest, directory, trained now?)."""
    recipe = dataclasses.replace(recipe, lora=resolve_options(base.model, recipe.lora))
    key = recipe_key(recipe, base, dataset)
    cache = TrainedPartCache(Path(cache_dir) / "lora", LoraEntry)
    directory = cache.directory(key)
    if cache.has(key):
        t0 = time.perf_counter()
        peft_model = attach_lora(base.model, recipe.lora, seed=recipe.seed)
        load_lora_state(peft_model, read_adapter(directory))
        peft_model.eval()
        manifest = cache.layout.read_manifest(directory)
        manifest["load_seconds"] = round(time.perf_counter() - t0, 3)
        return peft_model, manifest, directory, False
    model = LoraModel(recipe, base, dataset.item_titles)

    def announce(k: str, resume: Resume | None) -> None:
        if progress:
            print(f"LoRA fine-tuning (cache key {k})" + (f", resuming after stage {resume.stages} (cached "
                                                         f"{resume.key})" if resume is not None else "") + " ...",
                  flush=True)

    _, manifest, _ = train_cached(recipe, model, dataset, cache, progress=progress, announce=announce,
                                  manifest=lambda r, _t, records, seconds: model.manifest(r, dataset, records, seconds))
    return model.peft_model, manifest, directory, True
