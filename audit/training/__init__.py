"""The training path shared by every trainable model (the reference GPT-2 and any ``hf`` causal
LM with LoRA): the :class:`~audit.training.protocol.Trainable` protocol, the base of a stage's
training data (:mod:`audit.training.data`) and the trainers registered by name."""
