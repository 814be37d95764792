"""The federated trainer: partitions, reproducible client sampling, the DP aggregate, and
(slow) real Flower simulations against centralised training."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from audit.config import validate_config
from audit.errors import ConfigError
from audit.training.recipe import StageSpec
from audit.training.trainers import train_plain
from audit.reference.trainable import ReferenceTrainable
from audit.variants import BuildContext
from privacy.federated import FederatedConfig, FederatedOptions, FederatedVariant, partition_users, run_federated
from privacy.flower_app import sample_partitions
from privacy.task import client_seed, get_weights
from tests.privacy.conftest import stage_data, tiny_recipe


# -- partitions and sampling -------------------------------------------------------------
def test_iid_partition_covers_every_user_once_in_near_equal_parts(tiny_dataset):
    users = tiny_dataset.user_ids()
    parts = partition_users(users, tiny_dataset.user_profiles, 6, "iid", "occupation", seed=0)
    assert sorted(u for p in parts for u in p) == sorted(users)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == partition_users(users, tiny_dataset.user_profiles, 6, "iid", "occupation", seed=0)
    assert parts != partition_users(users, tiny_dataset.user_profiles, 6, "iid", "occupation", seed=1)


def test_attribute_partition_keeps_each_value_in_one_client(tiny_dataset):
    users, profiles = tiny_dataset.user_ids(), tiny_dataset.user_profiles
    parts = partition_users(users, profiles, 3, "attribute", "occupation", seed=0)
    assert sorted(u for p in parts for u in p) == sorted(users)
    owners = {}
    for c, part in enumerate(parts):
        for u in part:
            owners.setdefault(profiles[u]["occupation"], set()).add(c)
    assert all(len(cs) == 1 for cs in owners.values())
    with pytest.raises(ConfigError, match="at most 3"):
        partition_users(users, profiles, 4, "attribute", "occupation", seed=0)


def test_client_sampling_is_seeded_without_replacement():
    a = [sample_partitions(7, r, 20, 5) for r in range(1, 6)]
    assert a == [sample_partitions(7, r, 20, 5) for r in range(1, 6)]
    assert all(len(set(s)) == 5 and all(0 <= p < 20 for p in s) for s in a)
    assert len({tuple(s) for s in a}) > 1  # rounds differ


def test_config_validation(tiny_dataset, tmp_path):
    for bad in ({"clients": 2, "clients_per_round": 3}, {"dp": {"clipping_norm": 1.0}}, {"clients": "households"},
                {"dp": {"epsilon": 1, "noise_multiplier": 1}}, {"partition": "zipcode"}, {"rounds": 0}):
        with pytest.raises(ConfigError):
            validate_config(FederatedConfig, bad, "recommenders.x: variant 'federated'")
    cfg = FederatedConfig(partition="attribute", attribute="zipcode")
    with pytest.raises(ConfigError, match="zipcode"):
        FederatedVariant(cfg).modify_recipe(tiny_recipe(), BuildContext(tiny_dataset, tmp_path))


def test_one_client_per_user(tiny_dataset):
    opts = FederatedOptions(clients="users", clients_per_round=5)
    users = tiny_dataset.user_ids()
    assert opts.n_clients(len(users)) == len(users)
    parts = partition_users(users, tiny_dataset.user_profiles, len(users), "iid", "occupation", seed=0)
    assert sorted(len(p) for p in parts) == [1] * len(users)
    with pytest.raises(ConfigError, match="exceeds"):
        FederatedOptions(clients="users", clients_per_round=50).n_clients(len(users))


def test_variant_recipe_carries_flat_options_into_the_finetune_stage(tiny_dataset, tmp_path):
    cfg = validate_config(FederatedConfig, {"clients": 4, "clients_per_round": 2, "rounds": 3, "local_epochs": 2,
                                            "dp": {"epsilon": 8, "clipping_norm": 0.1}}, "test")
    recipe = FederatedVariant(cfg).modify_recipe(tiny_recipe(), BuildContext(tiny_dataset, tmp_path))
    fine = recipe.stage("finetune")
    assert fine.trainer == "federated" and fine.epochs == 2
    opts = validate_config(FederatedOptions, dict(fine.options), "stage")
    assert (opts.clients, opts.clients_per_round, opts.rounds, opts.dp, opts.dp_epsilon, opts.dp_clipping_norm) == \
        (4, 2, 3, True, 8.0, 0.1)
    hash(recipe)  # options stay flat: the recipe stays hashable
    assert recipe.stage("pretrain").trainer == "plain"


# -- the DP aggregate --------------------------------------------------------------------
def _reply(arrays: list[np.ndarray], node: int) -> Message:
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id=f"i{node}",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    content = RecordDict({"arrays": ArrayRecord([a.copy() for a in arrays]),
                          "metrics": MetricRecord({"unit-weight": 1.0, "num-examples": 10.0 * node})})
    return Message(content=content, metadata=meta)


def test_fedavg_gives_the_same_bits_whatever_order_the_clients_reply_in():
    """Replies are aggregated in partition order: the float sums (so the model) never depend on which
    simulated client finished first (arrival order made federated figures differ in the 4th decimal)."""
    from privacy.flower_app import SeededFedAvg, ServerPlan

    rng = np.random.default_rng(1)
    updates = [[(rng.normal(size=(64, 16)) * 10.0 ** rng.integers(-4, 4)).astype(np.float32)] for _ in range(5)]
    nodes = {p: 100 + 7 * p for p in range(5)}
    results = []
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [3, 4, 1, 0, 2]):
        strategy = SeededFedAvg(ServerPlan(rounds=1, clients=5, clients_per_round=5, seed=0), nodes)
        aggregated, _ = strategy.aggregate_train(1, [_reply(updates[p], node=nodes[p]) for p in order])
        results.append(aggregated.to_numpy_ndarrays()[0])
    assert all(np.array_equal(results[0], r) for r in results[1:])
    weights = {p: 10.0 * nodes[p] for p in nodes}  # _reply's num-examples
    mean = sum(weights[p] * updates[p][0].astype(np.float64) for p in nodes) / sum(weights.values())
    np.testing.assert_allclose(results[0], mean, rtol=1e-5, atol=1e-5)  # still the weighted mean


def test_dp_aggregate_without_noise_is_fedavg_of_clipped_updates():
    """Flower's server-side fixed clipping with z = 0 equals the uniform mean of the updates
    clipped to C (here one update is clipped, one is not)."""
    rng = np.random.default_rng(0)
    current = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    updates = [[rng.normal(size=(3, 4)).astype(np.float32) * s, rng.normal(size=5).astype(np.float32) * s]
               for s in (2.0, 0.01, 0.5)]
    clip = 1.0
    strategy = DifferentialPrivacyServerSideFixedClipping(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=0.0,
                                                          clipping_norm=clip, num_sampled_clients=3)
    strategy.current_arrays = ArrayRecord([c.copy() for c in current])
    replies = [_reply([c + u for c, u in zip(current, up)], node=i + 1) for i, up in enumerate(updates)]
    aggregated, _ = strategy.aggregate_train(1, replies)
    got = aggregated.to_numpy_ndarrays()

    def clipped(up):
        norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in up))
        return [u * min(1.0, clip / norm) for u in up]
    norms = [np.sqrt(sum(float(np.sum(u ** 2)) for u in up)) for up in updates]
    assert min(norms) < clip < max(norms)  # both cases present
    expected = [c + np.mean([clipped(up)[i] for up in updates], axis=0) for i, c in enumerate(current)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6)


# -- real simulations (Ray) ----------------------------------------------------------------
@pytest.mark.slow
def test_one_client_one_round_equals_centralised_finetuning(tiny_reference, tiny_dataset):
    """FL with one client, one round and the same local epochs is centralised fine-tuning
    with that client's seed: the Flower/Ray path changes nothing but the process it runs in."""
    data = stage_data(tiny_reference, tiny_dataset)
    stage = StageSpec(name="finetune", users="finetune", trainer="plain", epochs=2, lr=2e-3, batch_size=8)
    central = copy.deepcopy(tiny_reference.model)
    train_plain(ReferenceTrainable(central, tiny_reference.tokenizer), data, stage, client_seed(5, 1, 0), False)
    fl = copy.deepcopy(tiny_reference.model)
    opts = FederatedOptions(clients=1, clients_per_round=1, rounds=1)
    outcome = run_federated(ReferenceTrainable(fl, tiny_reference.tokenizer), data, [list(data.users)], stage, opts,
                            seed=5)
    assert outcome["sampled"] == {1: [0]}
    for (name, a), b in zip(get_weights(central).items(), get_weights(fl).values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    assert not torch.equal(get_weights(fl)["transformer.ln_f.weight"],
                           get_weights(tiny_reference.model)["transformer.ln_f.weight"])


@pytest.mark.slow
def test_dp_simulation_without_noise_is_fedavg_of_clipped_local_updates(tiny_reference, tiny_dataset):
    """The whole FL + DP path with z = 0: the global model after one round is the start plus
    the mean of the sampled clients' local updates, each clipped to C."""
    data = stage_data(tiny_reference, tiny_dataset)
    stage = StageSpec(name="finetune", users="finetune", trainer="plain", epochs=1, lr=2e-3, batch_size=8)
    parts = partition_users(data.users, data.profiles, 4, "iid", "occupation", seed=0)
    opts = FederatedOptions(clients=4, clients_per_round=2, rounds=1, dp=True, dp_noise_multiplier=0.0,
                            dp_clipping_norm=0.05)
    start = get_weights(tiny_reference.model)
    fl = copy.deepcopy(tiny_reference.model)
    outcome = run_federated(ReferenceTrainable(fl, tiny_reference.tokenizer), data, parts, stage, opts, seed=3,
                            noise_multiplier=0.0)
    sampled = outcome["sampled"][1]
    updates = []
    for p in sampled:
        local = copy.deepcopy(tiny_reference.model)
        part = type(data)(data.fmt, {u: data.sequences[u] for u in parts[p]}, {u: data.profiles[u] for u in parts[p]},
                          data.attribute_dropout, data.catalog_titles)
        train_plain(ReferenceTrainable(local, tiny_reference.tokenizer), part, stage, client_seed(3, 1, p), False)
        updates.append({k: v - start[k] for k, v in get_weights(local).items()})
    clipped = []
    for up in updates:
        norm = torch.sqrt(sum((u.double() ** 2).sum() for u in up.values()))
        assert norm > 0.05  # the clipping is active
        clipped.append({k: u * min(1.0, 0.05 / float(norm)) for k, u in up.items()})
    for name, w in get_weights(fl).items():
        expected = start[name] + sum(c[name] for c in clipped) / len(clipped)
        torch.testing.assert_close(w, expected, atol=1e-5, rtol=1e-4, msg=name)
