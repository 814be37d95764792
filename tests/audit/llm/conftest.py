"""Fixtures: a tiny random Llama directory (SmolLM2's architecture) for the LLM training path."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from audit.reference.training import torch_threads
from tests.audit.llm.tiny_llama import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield
