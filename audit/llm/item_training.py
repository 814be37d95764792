"""Item-token fine-tuning of an ``hf`` causal LM on the shared training path, and its cache.

The model (``items: tokens``): the base LM with one token per catalog item
(:mod:`audit.llm.item_tokens`: input rows and an output head initialised from the title tokens'
embeddings), LoRA on its top layers, trained by next-item cross-entropy over the item tokens at
every history position (:mod:`audit.llm.item_examples`). Trained part = the LoRA weights, the
item input rows and the item head (weights + bias): what the cache stores, what federated
clients exchange, what Opacus clips per user. The frozen base never moves.

Cache entries live under ``<cache_dir>/item-lora/<key>/`` (``trained.safetensors`` +
``manifest.json``), key = recipe + base identity (weights, tokenizer, prompt prefix, catalog's
item vocabulary) + data fingerprint + training code (:mod:`audit.training.identity`), published
atomically; a multi-stage recipe resumes from its longest cached prefix.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from peft import PeftModel

from audit.llm.item_examples import ItemStageData
from audit.llm.item_tokens import ItemHead, ItemInit, ItemVocabulary, install_item_tokens
from audit.llm.lora import attach_lora, load_lora_state, lora_state, resolve_options
from audit.llm.trainable import per_example_cross_entropy, target_cross_entropy
from audit.llm.training import LORA_STAGE, LoraRecipe, TrainedStateEntry, training_manifest
from audit.training.identity import Resume, TrainedPartCache, model_key, train_cached
from audit.training.recipe import StageSpec

if TYPE_CHECKING:
    from audit.data.dataset import Dataset

#: the modules whose code decides the trained part (besides audit.training)
TRAINING_MODULES = ("audit.llm.item_tokens", "audit.llm.item_examples", "audit.llm.item_training",
                    "audit.llm.lora")
TRAINED_FILE = "trained.safetensors"
LORA_PREFIX, ITEM_INPUT, ITEM_OUTPUT, ITEM_BIAS = "lora.", "items.input", "items.output.weight", "items.output.bias"


@dataclass(frozen=True)
class ItemRecipe(LoraRecipe):
    """How an item-token ``hf`` model is trained: the LoRA recipe's users, stages, transforms and
    LoRA options, plus ``history`` (items per training window and per scoring prompt, 1..1000),
    ``item_init`` (``titles``: the mean of each title's token embeddings; ``random``: the
    ablation), ``train_item_inputs`` (train the item input rows, not only the head)."""

    #: 2 epochs of 50-item windows, lr 3e-3, batch 4 (1,098 steps for SmolLM2-135M on ML-100k's 849
    #: training users), HR@10 above item-kNN's on all 943 users under both negative protocols; one
    #: epoch of 100-item windows stayed below it (BENCHMARKS.md, "Item tokens")
    stages: tuple[StageSpec, ...] = (StageSpec(name=LORA_STAGE, users="trained", epochs=2, lr=3e-3,
                                               batch_size=4, warmup=0.05, catalog_titles=False),)
    history: int = 50
    item_init: ItemInit = "titles"
    train_item_inputs: bool = True

    #: the LoRA variant's options this recipe's examples read (``targets`` and
    #: ``examples_per_user`` shape title answers, which an item-token model has none of)
    example_options: ClassVar[frozenset[str]] = frozenset()


class ItemTokenLM(torch.nn.Module):
    """The causal LM (``lm``: its input embedding an :class:`~audit.llm.item_tokens.ItemAwareEmbedding`,
    possibly inside a peft LoRA wrapper) and the item ``head``: hidden states and item logits."""

    def __init__(self, lm: torch.nn.Module, head: ItemHead) -> None:
        super().__init__()
        self.lm, self.head = lm, head

    @property
    def body(self) -> torch.nn.Module:
        """The transformer without its text output head."""
        lm = self.lm.get_base_model() if isinstance(self.lm, PeftModel) else self.lm
        return lm.base_model

    @property
    def embedding(self) -> Any:
        return self.lm.get_input_embeddings()

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        return self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kw).last_hidden_state


class ItemTrainable:
    """The trained part of an :class:`ItemTokenLM` for the trainers (plain, dp, federated)."""

    features = frozenset({"plain", "dp", "federated"})

    def __init__(self, model: ItemTokenLM) -> None:
        self.model = model

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """LoRA weights with ``weight_decay``; item rows and biases without (embedding rows)."""
        lora = [p for n, p in self.named_trainable() if "lora_" in n]
        rows = [p for n, p in self.named_trainable() if "lora_" not in n]
        return [g for g in ({"params": lora, "weight_decay": weight_decay}, {"params": rows, "weight_decay": 0.0})
                if g["params"]]

    def _device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        device = self.model.head.linear.weight.device
        return [t.to(device) for t in tensors]

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-item cross-entropy (nats per target) over a right-padded batch."""
        input_ids, targets = self._device(input_ids, targets)
        return target_cross_entropy(self.model.hidden(input_ids), targets, self.model.head)

    def per_example_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape (B,): each example's mean next-item cross-entropy; the head sees (B, T, d)."""
        input_ids, targets = self._device(input_ids, targets)
        return per_example_cross_entropy(self.model.hidden(input_ids), targets, self.model.head)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """LoRA weights (``lora.`` + peft's names), item input rows, item head weight and bias."""
        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", torch.float32).contiguous()

        lora = isinstance(self.model.lm, PeftModel)
        out = {LORA_PREFIX + k: v for k, v in lora_state(self.model.lm).items()} if lora else {}
        out[ITEM_INPUT] = cpu(self.model.embedding.items.weight)
        out[ITEM_OUTPUT] = cpu(self.model.head.linear.weight)
        out[ITEM_BIAS] = cpu(self.model.head.linear.bias)
        return out

    def load_trained_state(self, state: Mapping[str, Any]) -> None:
        """Set the trained part from :meth:`trained_state`'s names (tensors or arrays)."""
        tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}
        lora = {k[len(LORA_PREFIX):]: v for k, v in tensors.items() if k.startswith(LORA_PREFIX)}
        if lora:
            load_lora_state(self.model.lm, lora)
        with torch.no_grad():
            for name, param in ((ITEM_INPUT, self.model.embedding.items.weight),
                                (ITEM_OUTPUT, self.model.head.linear.weight), (ITEM_BIAS, self.model.head.linear.bias)):
                if tuple(tensors[name].shape) != tuple(param.shape):
                    raise ValueError(f"trained state {name}: shape {tuple(tensors[name].shape)} does not fit "
                                     f"{tuple(param.shape)} (a model trained on another catalog?)")
                param.copy_(tensors[name].to(param.dtype))


@dataclass
class ItemBaseParts:
    """What item-token training needs from the adapter: the frozen base model (on its device), its
    tokenizer, the catalog's item vocabulary and titles, the text prefix encoder, the pad id and
    the identity of the base (weights, tokenizer, prompt format)."""

    model: Any
    tokenizer: Any
    vocab: ItemVocabulary
    titles: Mapping[str, str]
    encode_prefix: Callable[[Mapping[str, str]], list[int]]
    pad_id: int
    identity: str


def build_item_model(base: ItemBaseParts, recipe: ItemRecipe, *, lora: bool) -> ItemTokenLM:
    """Install the item tokens in ``base.model`` (rows by ``recipe.item_init``) and, with ``lora``,
    attach LoRA; only LoRA, the item head and (``train_item_inputs``) the item input rows train."""
    head = install_item_tokens(base.model, base.vocab, base.titles, base.tokenizer, init=recipe.item_init,
                               seed=recipe.seed)
    lm = attach_lora(base.model, recipe.lora, seed=recipe.seed) if lora else base.model
    model = ItemTokenLM(lm, head)
    model.embedding.items.weight.requires_grad_(recipe.train_item_inputs)
    return model


class ItemModel:
    """The item-token LM as the training path sees it (a :class:`~audit.training.protocol.TrainableModel`)."""

    training_modules: tuple[str, ...] = TRAINING_MODULES

    def __init__(self, recipe: ItemRecipe, base: ItemBaseParts) -> None:
        self.recipe, self.base = recipe, base
        self.identity: str | None = base.identity
        self.model = build_item_model(base, recipe, lora=True)
        self._trainable = ItemTrainable(self.model)

    def trainable(self) -> ItemTrainable:
        return self._trainable

    def before_stage(self, index: int, stage: StageSpec, sequences: Mapping[str, Sequence[str]]) -> None:
        return None

    def stage_data(self, stage: StageSpec, sequences: Mapping[str, Sequence[str]],
                   profiles: Mapping[str, Mapping[str, str]]) -> ItemStageData:
        return ItemStageData({str(u): tuple(map(str, s)) for u, s in sequences.items()},
                             {u: dict(p) for u, p in profiles.items()}, self.base.vocab, self.base.encode_prefix,
                             window=self.recipe.history, attribute_dropout=self.recipe.attribute_dropout,
                             pad_id=self.base.pad_id)

    def manifest(self, recipe: ItemRecipe, dataset: "Dataset", records: list[dict[str, Any]],
                 seconds: float) -> dict[str, Any]:
        return training_manifest(recipe, dataset, self.base.identity, self._trainable, records, seconds,
                                 items=self.base.vocab.digest_data())


#: an item-token entry: ``trained.safetensors`` (LoRA + item rows) + ``manifest.json``
ItemEntry = TrainedStateEntry(TRAINED_FILE)


def train_or_load_items(recipe: ItemRecipe, base: ItemBaseParts, dataset: "Dataset", cache_dir: Path, *,
                        progress: bool = False) -> tuple[ItemTokenLM, dict[str, Any], Path, bool]:
    """The trained item-token model for (recipe, base, data): loaded from
    ``cache_dir/item-lora/<key>`` or trained (resuming from a cached stage prefix) and published
    there. Returns (model in eval mode, LoRA still attached; manifest; directory; trained now?)."""
    recipe = dataclasses.replace(recipe, lora=resolve_options(base.model, recipe.lora))
    cache = TrainedPartCache(Path(cache_dir) / "item-lora", ItemEntry)
    model = ItemModel(recipe, base)
    key = model_key(recipe, model, dataset)
    directory = cache.directory(key)
    if cache.has(key):
        t0 = time.perf_counter()
        model.trainable().load_trained_state(cache.layout.read_state(directory))
        manifest = cache.layout.read_manifest(directory)
        manifest["load_seconds"] = round(time.perf_counter() - t0, 3)
        return model.model.eval(), manifest, directory, False

    def announce(k: str, resume: Resume | None) -> None:
        if progress:
            print(f"item-token fine-tuning (cache key {k})" + (f", resuming after stage {resume.stages} (cached "
                                                              f"{resume.key})" if resume is not None else "") + " ...",
                  flush=True)

    _, manifest, _ = train_cached(recipe, model, dataset, cache, progress=progress, announce=announce,
                                  manifest=lambda r, _t, records, seconds: model.manifest(r, dataset, records, seconds))
    return model.model.eval(), manifest, directory, True

