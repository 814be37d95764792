"""The federated server fails fast when simulated clients never come up (a Ray worker that dies at
start-up), instead of waiting out a round's time-out."""

from __future__ import annotations

import pytest

from privacy.flower_app import ServerPlan, discover_partitions


class _GridWithoutNodes:
    """A Flower grid on which no client ever registers (what a dead Ray worker leaves)."""

    def get_node_ids(self) -> list[int]:
        return []


def test_clients_that_never_come_up_fail_within_the_startup_timeout_and_say_so() -> None:
    with pytest.raises(RuntimeError, match=r"only 0 of 2 simulated clients came up within 0.5 s"):
        discover_partitions(_GridWithoutNodes(), 2, 0.5)  # type: ignore[arg-type]


def test_the_startup_wait_is_separate_from_and_shorter_than_a_rounds_wait() -> None:
    plan = ServerPlan(rounds=1, clients=2, clients_per_round=2, seed=0)
    assert plan.startup_timeout < plan.timeout
