"""Fixtures of the LLM tests: one torch thread per module (``tiny_llama_dir`` lives in tests/conftest.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from audit.training.stages import torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield
