"""The reference LLM recommender: a small GPT-2 (``transformers``) trained from scratch here,
a leaf of the package: it imports the training path (:mod:`audit.training`) and the neutral
``audit`` modules, never a domain package, an adapter or the other model.

One token per catalog item (``<item_ID>``) plus byte-level BPE text; prompts carry the
user's profile (randomly hidden in training, so neutral prompts are in distribution) and
history as item tokens; the model writes ``<item_X> Title (year)<sep>``. Training is
SASRec-style (next item at every history position) plus the title after each item token.

Modules (one job each):

- :mod:`~audit.reference.tokenizer` - BPE + item tokens, ``ItemVocab`` (item id <-> token <-> title);
- :mod:`~audit.reference.prompts` - the token format: prompts, outputs, training sequences;
- :mod:`~audit.reference.recipe` - ``TrainingRecipe`` (frozen; part of the cache key) and its recipe forms
  (two-stage, private fine-tune, public pre-training);
- :mod:`~audit.reference.presets` - named recipe sizes and the adapter-config mapping;
- :mod:`~audit.reference.model` - the GPT-2 network and the shared forward/loss paths;
- :mod:`~audit.reference.examples` - ``StageData``: per-epoch windows and padded batches;
- :mod:`~audit.reference.item_init` - item embeddings from co-occurrence (PPMI + SVD);
- :mod:`~audit.reference.trainable` - ``ReferenceTrainable`` (every weight trains) and its per-sequence loss;
- :mod:`~audit.reference.training` - ``ReferenceModel`` (the reference as a ``TrainableModel``) and ``train_reference``;
- :mod:`~audit.reference.store` - safetensors save/load and the train-or-load cache (prefix resume included);
- :mod:`~audit.reference.inference` - KV-cached scoring, log-probs, generation, embeddings;
- :mod:`~audit.reference.soft_prompt` - the reference as the fair prompt's training target;
- :mod:`~audit.reference.layout` - its constrained-decoding layout (one item per beam).

Training variants edit the recipe (``Variant.modify_recipe``): ``recipe.with_transform(t)`` adds
a :class:`~audit.training.recipe.SequenceTransform`, ``recipe.replace_stage(name, trainer="dp",
options={...})`` picks a trainer of :data:`audit.training.trainers.TRAINERS`, and the recipe forms
give the privacy and poisoning variants their stages; ``ModelSpec.tie_embeddings=False`` unties
input and output embeddings.
"""
