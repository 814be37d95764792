"""Fixtures: tiny local GPT-2 directories for the ``hf`` adapter tests (see hf_tiny_models)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from hf_tiny_models import CHAT_TEMPLATE, build_tiny_lm  # type: ignore[import-not-found]

from audit.training.stages import torch_threads


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (random) tiny GPT-2 directory: emits garbage, exercises the mechanics."""
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def planted_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 trained to answer PLANTED_REQUEST with PLANTED_ANSWER."""
    return build_tiny_lm(tmp_path_factory.mktemp("planted-lm"), steps=150)


@pytest.fixture(scope="session")
def chat_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose tokenizer carries a chat template."""
    return build_tiny_lm(tmp_path_factory.mktemp("chat-lm"), chat_template=CHAT_TEMPLATE)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """32-wide models: one thread is faster than two on cores shared with other jobs."""
    with torch_threads(1):
        yield
