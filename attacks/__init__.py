"""Poisoning attacks on (pre-)training data and item text, the defenses against them, and the
probe that measures both.

- :mod:`attacks.targets`: the target items, one deterministic choice shared by attacks and probe;
- :mod:`attacks.backdoor`: label replacement in the pre-training corpus (variant ``backdoor``);
- :mod:`attacks.shilling`: fake-user profile injection (variant ``fake-users``);
- :mod:`attacks.detection`: fake-user detectors and the ``detect-fakes`` defense;
- :mod:`attacks.text_attack`: item-title rewriting at inference (``item-text``) and the
  ``canonical-titles`` defense;
- :mod:`attacks.probe`: the ``poisoning`` probe; :mod:`attacks.summary`: attacked vs clean
  across a report; :mod:`attacks.manifest`: reading what a training variant recorded.
"""
