"""Real pretrained LLMs as recommenders: fetching them without a hub (:mod:`~audit.llm.fetch`),
LoRA instruction fine-tuning on the shared training path (:mod:`~audit.llm.lora`,
:mod:`~audit.llm.examples`, :mod:`~audit.llm.trainable`, :mod:`~audit.llm.training`) and the
``lora`` variant (:mod:`~audit.llm.variant`)."""
