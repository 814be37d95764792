"""The ``fair-prompt`` variant on a tiny reference model: it wraps the frozen model with a learned
prefix that changes its outputs, trains only on the model's trained users, caches the prefix
(a second build loads it without training), and rejects bad configs with a ConfigError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audit.adapters.reference import ReferenceAdapter
from audit.build import build_recommender
from audit.config import validate_config
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.fairness import fair_prompt, soft_prompt
from audit.fairness.fair_prompt import FairPromptConfig, FairPromptVariant
from audit.interface import Recommender, RecRequest
from audit.variants import BuildContext

BASE = {"adapter": "reference", "size": "tiny"}
FAST = {"attributes": ["gender"], "epochs": 2, "prefix_len": 4, "batch_size": 16}


@pytest.fixture(scope="module")
def ctx(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> BuildContext:
    return BuildContext(dataset=tiny_dataset, cache_dir=tmp_path_factory.mktemp("cache"), seed=0, progress=False)


@pytest.fixture(scope="module")
def base(ctx: BuildContext) -> ReferenceAdapter:
    return build_recommender("ref", BASE, ctx)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def defended(ctx: BuildContext, base: ReferenceAdapter) -> ReferenceAdapter:
    return build_recommender("ref+fair", {**BASE, "variant": {"fair-prompt": FAST}}, ctx)  # type: ignore[return-value]


def variant(**options: Any) -> FairPromptVariant:
    return FairPromptVariant(validate_config(FairPromptConfig, {**FAST, **options}, "test"))


def neutral_request(dataset: Dataset, user: str, candidates: tuple[str, ...] = ()) -> RecRequest:
    seq = dataset.sequences[user]
    return RecRequest(history=tuple(dataset.item_titles[i] for i in seq.test_history), candidates=candidates,
                      user=user)


def test_wrapped_recommender_generates_scores_and_embeds_differently_from_the_base(
        base: ReferenceAdapter, defended: ReferenceAdapter, tiny_dataset: Dataset) -> None:
    assert defended.soft_prefix is not None and defended.soft_prefix.shape == (4, base.model.config.n_embd)
    assert base.soft_prefix is None
    info = defended.info["fair_prompt"]
    assert info["attributes"] == ["gender"] and info["classes"] == ["gender=F", "gender=M"]
    assert info["trained_now"] is True and info["seconds"] >= 0 and info["steps"] > 0
    assert np.isfinite(info["final_rec_loss"]) and np.isfinite(info["final_disc_loss"])
    reqs = [neutral_request(tiny_dataset, u) for u in ("1", "2", "3")]
    titles = list(tiny_dataset.item_titles.values())
    emb_base, emb_def = base.embed_user(reqs), defended.embed_user(reqs)
    assert emb_def.shape == emb_base.shape and np.isfinite(emb_def).all()
    assert not np.allclose(emb_def, emb_base, atol=1e-4)
    s_base = base.score(reqs, [titles] * 3)
    s_def = defended.score(reqs, [titles] * 3)
    assert all(np.isfinite(s).all() and (s <= 0).all() for s in s_def)
    assert not all(np.allclose(a, b, atol=1e-4) for a, b in zip(s_base, s_def))
    gens = defended.generate(reqs, 5)
    assert [len(g) for g in gens] == [5, 5, 5]
    assert np.mean([t in set(titles) for g in gens for t in g]) >= 0.5


def test_training_leaves_the_base_model_unchanged(ctx: BuildContext, base: ReferenceAdapter,
                                                    tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    grads = [p.requires_grad for p in base.model.parameters()]
    own = BuildContext(dataset=ctx.dataset, cache_dir=tmp_path, seed=0, progress=False)
    wrapped = variant(seed=3).wrap(base, own)
    assert wrapped.info["fair_prompt"]["trained_now"] is True
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in base.model.parameters()] == grads
    assert base.soft_prefix is None and "fair_prompt" not in base.info


def test_a_second_build_loads_the_cached_prefix_without_training(
        ctx: BuildContext, defended: ReferenceAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_train(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the prefix was trained again instead of loaded from the cache")

    monkeypatch.setattr(soft_prompt, "train_fair_prompt", must_not_train)
    again = build_recommender("ref+fair2", {**BASE, "variant": {"fair-prompt": FAST}}, ctx)
    assert again.info["fair_prompt"]["trained_now"] is False
    assert again.info["fair_prompt"]["prefix_dir"] == defended.info["fair_prompt"]["prefix_dir"]
    torch.testing.assert_close(again.soft_prefix, defended.soft_prefix, rtol=0, atol=0)
    assert again.info["fair_prompt"]["final_rec_loss"] == defended.info["fair_prompt"]["final_rec_loss"]
    # another config is another cache entry: it would train (and here hits the guard)
    with pytest.raises(AssertionError, match="trained again"):
        build_recommender("ref+fair3", {**BASE, "variant": {"fair-prompt": {**FAST, "lam": 2.0}}}, ctx)


def test_the_prompt_trains_only_on_the_models_trained_users(
        ctx: BuildContext, base: ReferenceAdapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def capture(target: Any, sequences: dict, labels: dict, settings: Any, **kw: Any) -> Any:
        seen.update(sequences=sequences, labels=labels, settings=settings)
        raise RuntimeError("captured")

    monkeypatch.setattr(soft_prompt, "train_fair_prompt", capture)
    own = BuildContext(dataset=ctx.dataset, cache_dir=tmp_path, seed=0, progress=False)
    with pytest.raises(RuntimeError, match="captured"):
        variant(attributes=["gender", "age"], lam=0.5).wrap(base, own)
    groups = ctx.dataset.user_groups(seed=0, pretrain=0.5, heldout=0.1)
    assert groups.heldout and seen["labels"]
    assert set(seen["labels"]) == set(groups.trained)
    assert not set(seen["labels"]) & set(groups.heldout)
    assert seen["labels"]["1"] == f"gender={ctx.dataset.user_profiles['1']['gender']}&age=" \
                                  f"{ctx.dataset.user_profiles['1']['age']}"
    assert seen["sequences"]["1"] == ctx.dataset.sequences["1"].train
    assert seen["settings"].lam == 0.5 and seen["settings"].prefix_len == 4
    assert not (tmp_path / "fair-prompt").exists() or not any((tmp_path / "fair-prompt").iterdir())


def test_an_unknown_attribute_is_a_config_error_listing_the_valid_ones(
        ctx: BuildContext, base: ReferenceAdapter) -> None:
    with pytest.raises(ConfigError, match=r"'religion'.*gender, age, occupation"):
        variant(attributes=["religion"]).wrap(base, ctx)


def test_bad_options_are_config_errors(ctx: BuildContext) -> None:
    with pytest.raises(ConfigError, match="attributes"):
        build_recommender("x", {**BASE, "variant": {"fair-prompt": {}}}, ctx)
    with pytest.raises(ConfigError, match="repeat"):
        build_recommender("x", {**BASE, "variant": {"fair-prompt": {"attributes": ["gender", "gender"]}}}, ctx)
    with pytest.raises(ConfigError, match="unknown option 'lambda'"):
        build_recommender("x", {**BASE, "variant": {"fair-prompt": {"attributes": ["gender"], "lambda": 1}}}, ctx)


class ConstantRecommender(Recommender):
    name = "constant"
    capabilities = frozenset({"generate"})

    def generate(self, reqs: Any, k: int) -> list[list[str]]:
        return [["Film Number 1"][:k] for _ in reqs]


def test_a_recommender_without_the_soft_prompt_capability_is_a_config_error(ctx: BuildContext) -> None:
    with pytest.raises(ConfigError, match="does not declare it"):
        variant().wrap(ConstantRecommender(), ctx)


def test_in_a_suite_run_the_prompt_is_fitted_only_on_users_outside_the_audited_ones(
        ctx: BuildContext, base: ReferenceAdapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def capture(target: Any, sequences: dict, labels: dict, settings: Any, **kw: Any) -> Any:
        seen.update(labels=labels)
        raise RuntimeError("captured")

    monkeypatch.setattr(soft_prompt, "train_fair_prompt", capture)
    audited = frozenset(ctx.dataset.sample_users(12, 0))
    run_ctx = BuildContext(dataset=ctx.dataset, cache_dir=tmp_path, seed=0, progress=False, audit_users=audited)
    with pytest.raises(RuntimeError, match="captured"):
        variant(attributes=["gender"]).wrap(base, run_ctx)
    assert seen["labels"] and not set(seen["labels"]) & audited
    groups = ctx.dataset.user_groups(seed=0, pretrain=0.5, heldout=0.1)
    assert set(seen["labels"]) == set(groups.trained) - audited
    # auditing (almost) everyone leaves nothing to fit on: one message naming the fix
    everyone = BuildContext(dataset=ctx.dataset, cache_dir=tmp_path, seed=0, progress=False,
                            audit_users=frozenset(ctx.dataset.user_ids()))
    with pytest.raises(ConfigError, match="give its probes fewer users"):
        variant(attributes=["gender"]).wrap(base, everyone)


def test_a_lambda_grid_is_chosen_on_validation_users_by_the_stated_rule(
        ctx: BuildContext, base: ReferenceAdapter, tmp_path: Path) -> None:
    audited = frozenset(ctx.dataset.sample_users(8, 1))
    run_ctx = BuildContext(dataset=ctx.dataset, cache_dir=tmp_path, seed=0, progress=False, audit_users=audited)
    wrapped = variant(lam=[30.0, 0.0], target_auc=0.6, validation_share=0.5).wrap(base, run_ctx)
    info = wrapped.info["fair_prompt"]
    selection = info["lam_selection"]
    grid = selection["grid"]
    assert [t["lam"] for t in grid] == [0.0, 30.0]  # ascending
    assert selection["validation_users"] >= 2 and selection["fit_users"] + selection["validation_users"] \
        == info["fit_users"]["n"]
    assert all(np.isfinite(t["validation_auc"]) for t in grid)
    passing = [t["lam"] for t in grid if t["validation_auc"] <= 0.6]
    expected = passing[0] if passing else min(grid, key=lambda t: t["validation_auc"])["lam"]
    assert info["lam"] == selection["chosen"] == expected
    with pytest.raises(ConfigError, match="lam"):
        variant(lam=[])
    with pytest.raises(ConfigError, match="lam"):
        variant(lam=[1.0, -2.0])


def fair_suite(tmp_path: Path, dataset: Dataset, probes: dict[str, Any]) -> Path:
    from tests.audit import runner_testkit as kit

    return kit.write_suite(tmp_path / "suite", {
        "name": "fairfit", "dataset": {"seed": 0},
        "recommenders": {"ref": BASE, "ref+fair": {**BASE, "variant": {"fair-prompt": FAST}}},
        "probes": probes}, dataset=dataset)


def test_in_a_run_the_prompt_leaves_out_only_the_users_its_own_probes_report_on(
        tiny_dataset: Dataset, tmp_path: Path, recaudit_home: Path) -> None:
    """Utility reads every user but only on the undefended model; fairness reads 12 users on both:
    the prompt is fitted on trained users outside those 12 (users the undefended model's utility
    reads are fair game), and the runner's union of probe samples is what the probes then audit."""
    from audit.runner import audited_by_recommender, run_suite_file
    from audit.suite import load_suite

    path = fair_suite(tmp_path, tiny_dataset, {
        "utility": {"k": [5], "negatives": 10, "recommenders": ["ref"]},
        "fairness": {"attributes": [["gender"]], "k": 3, "users": 12}})
    outcome = run_suite_file(path, out=tmp_path / "r")
    assert outcome.exit_code == 0, [j.result.message for j in outcome.jobs]
    suite = load_suite(path)
    audited = audited_by_recommender(suite, tiny_dataset, tiny_dataset.sample_users(None, 0))
    records = [json.loads(line) for line in (outcome.out / "outputs.jsonl").read_text().splitlines()]
    fairness_users = {r["user"] for r in records if r["probe"] == "fairness"}
    assert audited["ref+fair"] == frozenset(fairness_users) and len(fairness_users) == 12
    assert audited["ref"] == frozenset(tiny_dataset.sample_users(None, 0))
    [entry] = [r for r in outcome.report["recommenders"] if r["name"] == "ref+fair"]
    fit = entry["info"]["fair_prompt"]["fit_users"]
    groups = tiny_dataset.user_groups(seed=0, pretrain=0.5, heldout=0.1)
    assert fit["n"] == len(set(groups.trained) - fairness_users)


def test_a_probe_reading_every_user_on_the_defended_model_stops_the_run_at_load_with_exit_2(
        tiny_dataset: Dataset, tmp_path: Path, recaudit_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    path = fair_suite(tmp_path, tiny_dataset, {"utility": {"k": [5], "negatives": 10}})
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "recommenders.ref+fair: variant 'fair-prompt': only 0 user(s) are outside" in err
    assert "give its probes fewer users" in err
    assert not (tmp_path / "r" / "jobs").exists() or not any((tmp_path / "r" / "jobs").iterdir()), \
        "no job ran (the undefended model's utility included)"
    assert not (recaudit_home / "models").exists() or not any((recaudit_home / "models").rglob("*.safetensors"))


def test_the_defended_models_cached_results_are_keyed_on_the_users_it_leaves_out(
        tiny_dataset: Dataset, tmp_path: Path) -> None:
    """Another probe reading other users changes what the prompt is fitted on, so every cached job
    of the defended model is recomputed; the undefended model's keys stay."""
    from audit.runner import plan_jobs
    from audit.suite import load_suite

    def keys(fairness_users: int) -> dict[tuple[str, str], str]:
        path = fair_suite(tmp_path / str(fairness_users), tiny_dataset, {
            "utility": {"k": [5], "negatives": 10, "users": 10},
            "fairness": {"attributes": [["gender"]], "k": 3, "users": fairness_users}})
        suite = load_suite(path)
        return {(j.recommender, j.probe.alias): j.key
                for j in plan_jobs(suite, tiny_dataset, tiny_dataset.sample_users(None, 0))}

    a, b = keys(12), keys(14)
    assert a[("ref", "utility")] == b[("ref", "utility")]
    assert a[("ref+fair", "utility")] != b[("ref+fair", "utility")]
