"""LoRA fine-tuning of an ``hf`` model on the shared training path, and its cache.

The :class:`LoraRecipe` is model-independent like the reference's recipe (user groups, stages,
sequence transforms, trainer by name) plus the LoRA options and how examples are drawn. Each
stage trains with a trainer from :data:`audit.reference.trainers.TRAINERS` through
:class:`~audit.llm.trainable.LoraTrainable`. The trained LoRA weights are cached under
``<cache_dir>/lora/<key>/`` (``adapter.safetensors`` + ``manifest.json``), key = SHA-256 of the
recipe, the base model's weights and tokenizer digest, the prompt format, the data fingerprint
and the training code; a directory counts only when its manifest says complete, and it is
written under a temporary name and renamed, so an interrupted run never leaves half a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from audit.cache import publish_directory
from audit.llm.examples import LLMStageData
from audit.llm.lora import LoraOptions, attach_lora, read_adapter, save_adapter, load_lora_state
from audit.llm.trainable import LoraTrainable
from audit.reference.recipe import RecipeOps, SequenceTransform, StageSpec, _jsonable

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

LORA_STAGE = "lora"
#: the stage and user group a poisoned pre-training LoRA stage trains on (see ``with_public_pretrain``)
PUBLIC_STAGE, PUBLIC_GROUP = "pretrain", "pretrain"
TRAINING_MODULES = ("audit.llm.examples", "audit.llm.trainable", "audit.llm.training", "audit.llm.lora",
                    "audit.training.data", "audit.reference.trainers")


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

    def prefix(self, n: int) -> "LoraRecipe | None":
        """The recipe of the first ``n`` stages (what the model is after stage ``n``: its cache
        entry), or None where that recipe would not train those stages alike: a transform of a
        later stage listed before one of theirs (the transform seeds follow list positions)."""
        names = [s.name for s in self.stages[:n]]
        edits = [any(t.applies_to(name, self) for name in names) for t in self.sequence_transforms]
        kept = sum(edits)
        if not 0 < n < len(self.stages) or any(edits[kept:]) or not all(edits[:kept]):
            return None
        return dataclasses.replace(self, stages=self.stages[:n], sequence_transforms=self.sequence_transforms[:kept])

    def to_json(self) -> dict[str, Any]:
        return {"lora": self.lora.model_dump(mode="json"),
                "stages": [{**dataclasses.asdict(s), "options": {k: _jsonable(v) for k, v in s.options}}
                           for s in self.stages],
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


def code_version() -> str:
    import importlib

    h = hashlib.sha256()
    for name in TRAINING_MODULES:
        f = Path(importlib.import_module(name).__file__)
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def recipe_key(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset") -> str:
    from audit.reference.store import recipe_code_version_modules

    extra = recipe_code_version_modules(recipe)
    payload = json.dumps({"recipe": recipe.to_json(), "base": base.identity, "data": dataset.fingerprint,
                          "code": code_version(), "extra": extra}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resume:
    """Training picked up after the first ``stages`` stages, from a cached prefix: its LoRA
    weights, its stage records and its cache key."""

    stages: int
    state: dict[str, torch.Tensor]
    records: list[dict[str, Any]]
    key: str


def train_lora(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", *, progress: bool = False,
               resume: Resume | None = None,
               after_stage: Callable[[int, Any, list[dict[str, Any]]], None] | None = None,
               ) -> tuple[Any, dict[str, Any]]:
    """Attach LoRA to ``base.model`` and train it stage by stage; returns (peft model, manifest).
    With ``resume``, start from its weights after its stages; ``after_stage(n, peft model, stage
    records)`` is called after each stage but the last (the cache publishes the prefix there)."""
    from audit.reference.trainers import TRAINERS
    from audit.reference.training import stage_seed, stage_training_sequences

    t_start = time.perf_counter()
    peft_model = attach_lora(base.model, recipe.lora, seed=recipe.seed)
    trainable = LoraTrainable(peft_model)
    groups = dataset.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share,
                                 heldout=recipe.heldout_share)
    titles = dict(dataset.item_titles)
    stages_out: list[dict[str, Any]] = []
    if resume is not None:
        load_lora_state(peft_model, resume.state)
        stages_out = [dict(r) for r in resume.records]
    for index, stage in enumerate(recipe.stages):
        if index < len(stages_out):
            continue
        seqs, profiles, transforms = stage_training_sequences(recipe, index, stage, groups, dataset)
        data = LLMStageData({str(u): tuple(map(str, s)) for u, s in seqs.items()}, profiles, titles,
                            base.encode_prompt, base.encode_answer, history=recipe.history,
                            targets=recipe.targets, examples_per_user=recipe.examples_per_user,
                            attribute_dropout=recipe.attribute_dropout, pad_id=base.pad_id)
        summary = TRAINERS.get(stage.trainer)(trainable, data, stage, stage_seed(recipe, index, "train"), progress)
        stages_out.append({"name": stage.name, "users_group": stage.users, "n_users": len(seqs),
                           "users": sorted(seqs), "transforms": transforms, "summary": summary})
        if after_stage is not None and index < len(recipe.stages) - 1:
            after_stage(index + 1, peft_model, stages_out)
    peft_model.eval()
    manifest = _manifest(recipe, base, dataset, trainable, stages_out, time.perf_counter() - t_start)
    if resume is not None:
        manifest["resumed_from"] = {"key": resume.key, "stages": resume.stages}
    return peft_model, manifest


def _manifest(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", trainable: LoraTrainable,
              stages: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    groups = dataset.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share,
                                 heldout=recipe.heldout_share)
    n_trainable = sum(p.numel() for _, p in trainable.named_trainable())
    return {"recipe": recipe.to_json(), "base": base.identity,
            "data": {"name": dataset.name, "fingerprint": dataset.fingerprint},
            "groups": {"seed": recipe.split_seed, "pretrain": len(groups.pretrain),
                       "finetune": len(groups.finetune), "heldout": len(groups.heldout)},
            "stages": [dict(s) for s in stages], "trainable_parameters": int(n_trainable),
            "train_seconds": round(seconds, 2), "threads": torch.get_num_threads()}


def is_complete(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / "manifest.json").read_text()).get("complete")) and \
            (directory / "adapter.safetensors").is_file()
    except (OSError, ValueError):
        return False


def train_or_load_lora(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", cache_dir: Path, *,
                       progress: bool = False) -> tuple[Any, dict[str, Any], Path, bool]:
    """The LoRA model for (recipe, base, data): loaded from ``cache_dir/lora/<key>`` or trained and
    saved there. A multi-stage recipe also saves what it is after each earlier stage (under that
    prefix's own key) and resumes from the longest such prefix already cached: a backdoored
    checkpoint used as it is and the same checkpoint fine-tuned share their first stage. Returns
    (peft model in eval mode, manifest, directory, trained now?)."""
    key = recipe_key(recipe, base, dataset)
    directory = Path(cache_dir) / "lora" / key
    if is_complete(directory):
        t0 = time.perf_counter()
        peft_model = attach_lora(base.model, recipe.lora, seed=recipe.seed)
        load_lora_state(peft_model, read_adapter(directory))
        peft_model.eval()
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["load_seconds"] = round(time.perf_counter() - t0, 3)
        return peft_model, manifest, directory, False
    resume = _cached_prefix(recipe, base, dataset, cache_dir)
    if progress:
        print(f"LoRA fine-tuning (cache key {key})" + (f", resuming after stage {resume.stages} (cached {resume.key})"
                                                       if resume is not None else "") + " ...", flush=True)
    t_start = time.perf_counter()

    def publish_prefix(n: int, model: Any, stages: list[dict[str, Any]]) -> None:
        prefix = recipe.prefix(n)
        if prefix is None:
            return
        pkey = recipe_key(prefix, base, dataset)
        trainable = LoraTrainable(model)
        pmanifest = {**_manifest(prefix, base, dataset, trainable, stages, time.perf_counter() - t_start),
                     "key": pkey}
        _publish(Path(cache_dir) / "lora" / pkey, trainable.trained_state(), pmanifest)

    peft_model, manifest = train_lora(recipe, base, dataset, progress=progress, resume=resume,
                                      after_stage=publish_prefix)
    manifest["key"] = key
    _publish(directory, LoraTrainable(peft_model).trained_state(), manifest)
    return peft_model, manifest, directory, True


def _cached_prefix(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", cache_dir: Path) -> Resume | None:
    """The longest complete cached prefix of ``recipe`` (fewer stages than all), if any."""
    for n in range(len(recipe.stages) - 1, 0, -1):
        prefix = recipe.prefix(n)
        if prefix is None:
            continue
        pkey = recipe_key(prefix, base, dataset)
        directory = Path(cache_dir) / "lora" / pkey
        if is_complete(directory):
            records = json.loads((directory / "manifest.json").read_text())["stages"]
            return Resume(stages=n, state=read_adapter(directory), records=records, key=pkey)
    return None


def _publish(directory: Path, state: dict[str, torch.Tensor], manifest: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        save_adapter(state, tmp)
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "complete": True}, indent=1))

    publish_directory(directory, write, is_complete)
