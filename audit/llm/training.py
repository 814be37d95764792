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
        return self, LORA_STAGE

    def with_public_pretrain(self, *, variant: str, pretrain_epochs: int | None, finetune_epochs: int | None,
                             keep_private: bool) -> tuple["LoraRecipe", str]:
        """A poisoned-checkpoint form of the recipe (Wu et al.'s pre-training backdoor on an LLM):
        with ``keep_private``, a ``pretrain`` LoRA stage on the ``pretrain`` user group (the stage a
        backdoor poisons; the LoRA stage's settings, ``pretrain_epochs``) and then the LoRA stage on
        the ``finetune`` group, training the *same* LoRA weights further (the clean fine-tune of the
        poisoned checkpoint, ``finetune_epochs``); without, the LoRA stage itself trains on the
        ``pretrain`` group and is the poisoned checkpoint used as it is. Returns (recipe, the
        public stage's name)."""
        from audit.errors import ConfigError

        names = [s.name for s in self.stages]
        lora = self.stage(LORA_STAGE)
        if names != [LORA_STAGE]:
            raise ConfigError(f"variant {variant!r} given twice (the LoRA recipe already has a public pre-training "
                              f"stage, stages {names}); use one {variant} variant per recommender")
        if not keep_private:
            if lora.trainer != "plain":
                raise ConfigError(f"variant {variant!r}: finetune: false makes the LoRA stage the poisoned "
                                  f"checkpoint, but another variant set its trainer to {lora.trainer!r}")
            out = self.replace_stage(LORA_STAGE, users=PUBLIC_GROUP, **_epochs(pretrain_epochs))
            return out, LORA_STAGE  # type: ignore[return-value]
        pre = dataclasses.replace(lora, name=PUBLIC_STAGE, users=PUBLIC_GROUP, trainer="plain", options=(),
                                  **_epochs(pretrain_epochs))
        fine = dataclasses.replace(lora, users="finetune", **_epochs(finetune_epochs))
        return dataclasses.replace(self, stages=(pre, fine)), PUBLIC_STAGE

    def private_finetune(self, *, variant: str, pretrain_epochs: int | None, **finetune: Any) -> "LoraRecipe":
        """The LoRA stage as the private fine-tune (the base checkpoint is the public part): its
        fields replaced by ``finetune`` (e.g. ``trainer='dp', options={...}``)."""
        from audit.errors import ConfigError

        if pretrain_epochs is not None:
            raise ConfigError(f"variant {variant!r}: pretrain_epochs does not apply to an hf model (its public "
                              "pretraining is its base checkpoint); drop it")
        current = self.stage(LORA_STAGE).trainer
        if current != "plain" and "trainer" in finetune:
            raise ConfigError(f"variant {variant!r}: the LoRA stage already uses trainer {current!r} (from another "
                              "variant); apply one privacy variant per recommender")
        changes = {k: v for k, v in finetune.items() if k != "catalog_titles"}
        return self.replace_stage(LORA_STAGE, **changes)  # type: ignore[return-value]

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


def train_lora(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", *, progress: bool = False,
               ) -> tuple[Any, dict[str, Any]]:
    """Attach LoRA to ``base.model`` and train it stage by stage; returns (peft model, manifest)."""
    from audit.reference.trainers import TRAINERS
    from audit.reference.training import stage_seed, stage_training_sequences

    t_start = time.perf_counter()
    peft_model = attach_lora(base.model, recipe.lora, seed=recipe.seed)
    trainable = LoraTrainable(peft_model)
    groups = dataset.user_groups(seed=recipe.split_seed, pretrain=recipe.pretrain_share,
                                 heldout=recipe.heldout_share)
    titles = dict(dataset.item_titles)
    stages_out = []
    for index, stage in enumerate(recipe.stages):
        seqs, profiles, transforms = stage_training_sequences(recipe, index, stage, groups, dataset)
        data = LLMStageData({str(u): tuple(map(str, s)) for u, s in seqs.items()}, profiles, titles,
                            base.encode_prompt, base.encode_answer, history=recipe.history,
                            targets=recipe.targets, examples_per_user=recipe.examples_per_user,
                            attribute_dropout=recipe.attribute_dropout, pad_id=base.pad_id)
        summary = TRAINERS.get(stage.trainer)(trainable, data, stage, stage_seed(recipe, index, "train"), progress)
        stages_out.append({"name": stage.name, "users_group": stage.users, "n_users": len(seqs),
                           "users": sorted(seqs), "transforms": transforms, "summary": summary})
    peft_model.eval()
    n_trainable = sum(p.numel() for _, p in trainable.named_trainable())
    manifest = {"recipe": recipe.to_json(), "base": base.identity,
                "data": {"name": dataset.name, "fingerprint": dataset.fingerprint},
                "groups": {"seed": recipe.split_seed, "pretrain": len(groups.pretrain),
                           "finetune": len(groups.finetune), "heldout": len(groups.heldout)},
                "stages": stages_out, "trainable_parameters": int(n_trainable),
                "train_seconds": round(time.perf_counter() - t_start, 2), "threads": torch.get_num_threads()}
    return peft_model, manifest


def is_complete(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / "manifest.json").read_text()).get("complete")) and \
            (directory / "adapter.safetensors").is_file()
    except (OSError, ValueError):
        return False


def train_or_load_lora(recipe: LoraRecipe, base: BaseModelParts, dataset: "Dataset", cache_dir: Path, *,
                       progress: bool = False) -> tuple[Any, dict[str, Any], Path, bool]:
    """The LoRA model for (recipe, base, data): loaded from ``cache_dir/lora/<key>`` or trained and
    saved there. Returns (peft model in eval mode, manifest, directory, trained now?)."""
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
    if progress:
        print(f"LoRA fine-tuning (cache key {key}) ...", flush=True)
    peft_model, manifest = train_lora(recipe, base, dataset, progress=progress)
    manifest["key"] = key

    def write(tmp: Path) -> None:
        save_adapter(LoraTrainable(peft_model).trained_state(), tmp)
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "complete": True}, indent=1))

    publish_directory(directory, write, is_complete)
    return peft_model, manifest, directory, True
