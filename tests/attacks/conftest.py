"""Fixtures for the poisoning tests (helpers in ``poisoning_testkit``)."""

from __future__ import annotations

import pytest
from poisoning_testkit import make_longtail_dataset

from audit.data.dataset import Dataset


@pytest.fixture(scope="session")
def longtail() -> Dataset:
    return make_longtail_dataset()
