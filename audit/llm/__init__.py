"""The ``hf`` LLM as a leaf: any local ``transformers`` causal LM as a recommender. It imports the
training path (:mod:`audit.training`) and neutral ``audit`` modules, never a domain package, an
adapter or the reference model.

- :mod:`~audit.llm.fetch` - fetching a model into the cache without a hub;
- :mod:`~audit.llm.loading` - local loading (safetensors), device checks, identity, training base;
- :mod:`~audit.llm.model` - ``CausalLM``: model, tokenizer, device and soft prefix together;
- :mod:`~audit.llm.encoding` - prompts and answers as token ids (chat template, windowing, BOS);
- :mod:`~audit.llm.decoding` - batched generation, stopping after k list items, constraint hooks;
- :mod:`~audit.llm.scoring` - candidate scoring over a shared prompt cache, token and answer log-probs;
- :mod:`~audit.llm.soft_prompt` - splicing a soft prefix, the fair prompt's training target;
- :mod:`~audit.llm.layout` - the constrained-decoding text layout;
- :mod:`~audit.llm.lora`, :mod:`~audit.llm.examples`, :mod:`~audit.llm.trainable`,
  :mod:`~audit.llm.training` - LoRA fine-tuning on the shared training path and its cache;
- :mod:`~audit.llm.variant` - the ``lora`` variant.
"""
