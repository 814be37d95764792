"""Memorisation of an ``hf`` LoRA fine-tune (tiny random Llama): canaries go into the LoRA stage's
data with their repetitions, canaries inserted 16 times are more exposed than once-inserted ones,
and the membership probe's reference-calibrated attack runs against the untuned base model
(``mia-reference: {base: true}``) and finds the fine-tune's members (36 members, 4 held-out users:
the tiny data set's split; the null control needs more non-members than that and is tested in
tests/audit/probes/test_membership_probe.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from audit.errors import ConfigError
from audit.memorisation.canaries import canary_manifests, is_canary_user
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.canary import CanaryConfig, CanaryExposureProbe
from audit.probes.membership import MembershipConfig, MembershipInferenceProbe
from audit.training.stages import torch_threads
from tests.audit.llm.tiny_llama import build_hf

LORA = {"lora": {"epochs": 8, "layers": None, "lr": 1e-2, "batch_size": 8, "targets": 3, "r": 4}}
# length 8 = the adapter's 5-item history window + 3 answer items: one training window per canary copy
CANARIES = {"canaries": {"repetitions": [1, 16], "per_repetition": 4, "length": 8, "audit_canaries": 0}}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def build(tiny_llama_dir: Path, dataset, cache: Path, variants: list):
    return build_hf(tiny_llama_dir, dataset, cache, variants)


@pytest.fixture(scope="module")
def canary_llm(tiny_llama_dir, tiny_dataset, tmp_path_factory):
    with torch_threads(1):
        yield build(tiny_llama_dir, tiny_dataset, tmp_path_factory.mktemp("cache"),
                    [LORA, CANARIES, {"mia-reference": {"base": True}}])


def context(dataset, probe: str) -> ProbeContext:
    return ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0, recorder=OutputRecorder("llm", probe))


def test_canaries_go_into_the_lora_stage_with_their_repetitions(canary_llm):
    (stage,) = canary_llm.manifest["stages"]
    assert stage["name"] == "lora"
    canaries = [u for u in stage["users"] if is_canary_user(u)]
    assert len(canaries) == 4 * 1 + 4 * 16
    (found,) = canary_manifests(canary_llm.manifest)
    assert found["stage"] == "lora" and sorted({c["repetitions"] for c in found["exposure"]}) == [1, 16]


def test_canaries_inserted_16_times_are_more_exposed_than_once_inserted(canary_llm, tiny_dataset):
    with torch_threads(1):
        result = CanaryExposureProbe(CanaryConfig(references=100)).run(canary_llm, context(tiny_dataset, "canary"))
    assert result.status == "pass" and result.details["canary_stage"] == "lora"
    assert result.details["path"].startswith("answers (last 3 items")  # the fine-tune's own windows
    m = result.metrics
    # measured: 4.74 vs 1.12 bits of 6.6; margins 1.99 vs -0.71 reference SDs (the text path: 1.81 vs 0.60)
    assert m["exposure_rep16"].value > m["exposure_rep1"].value + 2.0
    assert m["exposure_margin_rep16"].value > m["exposure_margin_rep1"].value + 1.5


def test_answer_log_probs_are_the_lora_examples_own_answer_token_log_likelihoods(canary_llm, tiny_dataset):
    """The answers path scores a training window exactly as the LoRA trained on it: the summed
    answer log-probs equal minus the example's summed loss, batched with rows of other lengths
    (left padding) or alone; the Min-K%++ statistics are those of the full next-token distribution."""
    from audit.interface import RecRequest
    from audit.llm.examples import make_example
    from audit.memorisation.scores import next_token_stats
    from audit.training.data import IGNORE

    titles = tiny_dataset.item_titles
    users = tiny_dataset.user_ids()[:3]
    reqs, answers = [], []
    for j, u in enumerate(users):
        seq = tiny_dataset.sequences[u].train
        cut = len(seq) - 1 - j  # answers of 1, 2 and 3 items: rows of different lengths
        reqs.append(RecRequest(history=tuple(titles[i] for i in seq[cut - 5:cut]), profile=tiny_dataset.user_profiles[u]))
        answers.append([titles[i] for i in seq[cut:]])
    with torch_threads(1):
        batched = canary_llm.answer_logprobs(reqs, answers, stats=True)
        alone = [canary_llm.answer_logprobs([r], [a])[0] for r, a in zip(reqs, answers)]
        for (lp, mu, sigma), (lp1, _, _), req, answer in zip(batched, alone, reqs, answers):
            ex = make_example(canary_llm.training_prompt_ids(req), canary_llm.answer_ids(answer), None)
            ids = torch.tensor(ex.ids)[None]
            with torch.no_grad():
                log_dist = torch.log_softmax(canary_llm.model(input_ids=ids).logits[0].double(), -1)
            at = torch.tensor(ex.targets) != IGNORE
            want = log_dist[at].gather(-1, torch.tensor(ex.targets)[at][:, None]).squeeze(-1).numpy()
            assert lp.shape == want.shape and np.allclose(lp, want, atol=1e-4) and np.allclose(lp1, want, atol=1e-4)
            want_mu, want_sigma = next_token_stats(log_dist[at].numpy())
            assert np.allclose(mu, want_mu, atol=1e-4) and np.allclose(sigma, want_sigma, atol=1e-4)
    assert canary_llm.answer_items == 3


def test_answer_generate_decodes_greedily_after_the_training_prompt(canary_llm, tiny_dataset):
    """Extraction's answers mode reads the fine-tune's greedy answer to its own training prompt:
    the prompt it reports tokenises to the LoRA example's prompt, and its raw text is the start of a
    plain greedy decoding (no cache) from there; at most ``max_items`` titles come back."""
    from audit.interface import RecRequest

    titles = tiny_dataset.item_titles
    u = tiny_dataset.user_ids()[0]
    seq = tiny_dataset.sequences[u].train
    req = RecRequest(history=tuple(titles[i] for i in seq[-8:-3]), profile=tiny_dataset.user_profiles[u])
    with torch_threads(1):
        (gen,) = canary_llm.answer_generate([req], 2)
        prompt = canary_llm.training_prompt_ids(req)
        assert list(canary_llm.tokenizer(gen.prompt, add_special_tokens=False)["input_ids"]) == prompt
        ids = list(prompt)
        eos = canary_llm.tokenizer.eos_token_id
        with torch.no_grad():
            for _ in range(canary_llm.config.max_new_tokens):
                nxt = int(canary_llm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                ids.append(nxt)
                if nxt == eos:
                    break
    greedy = canary_llm.tokenizer.decode(ids[len(prompt):], skip_special_tokens=True)
    assert gen.raw and greedy.startswith(gen.raw)
    assert len(gen.items) <= 2


def test_reference_calibrated_mia_uses_the_untuned_base_and_finds_the_members(canary_llm, tiny_llama_dir, tiny_dataset,
                                                                               tmp_path):
    base = canary_llm.calibration_reference
    assert canary_llm.info["calibration_reference"] == {"base": True}
    with torch_threads(1):
        zero_shot = build(tiny_llama_dir, tiny_dataset, tmp_path, [])
        assert base.manifest is None and all(torch.equal(p, dict(zero_shot.model.named_parameters())[n])
                                             for n, p in base.model.named_parameters())  # no LoRA in it
        attacks = ["loss", "ref"]
        # the text path (one title per line): the tiny model's fine-tune raises its members' titles
        # there; on the answers path its gain is the answer format's, alike for members and
        # non-members (0.487 vs 0.486 nats per token: a d = 32 model memorises no user's answer)
        result = MembershipInferenceProbe(MembershipConfig(attacks=attacks, path="tokens")).run(
            canary_llm, context(tiny_dataset, "membership"))
    assert result.status == "pass" and "ref" not in result.details.get("skipped", {})
    ref = result.metrics["mia_auroc_ref"]
    assert ref.n == 40 and ref.ci[0] > 0.5  # measured: 0.79 [0.61, 0.92] (loss alone: 0.65 [0.47, 0.81])


def test_mia_reference_base_needs_a_fine_tuned_model_and_takes_no_training_options(tiny_llama_dir, tiny_dataset,
                                                                                   tmp_path):
    with pytest.raises(ConfigError, match="base: true needs a model fine-tuned here"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, [{"mia-reference": {"base": True}}])
    with pytest.raises(ConfigError, match="drop users, epochs and options"):
        build(tiny_llama_dir, tiny_dataset, tmp_path, [LORA, {"mia-reference": {"base": True, "epochs": 3}}])


def test_identity_tells_apart_what_answers_differently(canary_llm, tiny_llama_dir, tiny_dataset, tmp_path):
    """The untuned base, built twice, has one identity; a LoRA fine-tune and a soft prefix each
    change it; a wrapper declares none (its answers are not the inner model's)."""
    from audit.decoding.delegate import DelegatingRecommender

    with torch_threads(1):
        zero_shot = build(tiny_llama_dir, tiny_dataset, tmp_path, [])
    base = canary_llm.calibration_reference
    assert base.identity() == zero_shot.identity() is not None
    assert canary_llm.identity() not in (None, base.identity())
    prefixed = zero_shot.with_soft_prefix(torch.zeros(2, zero_shot.model.config.hidden_size))
    assert prefixed.identity() not in (None, zero_shot.identity())
    assert DelegatingRecommender(zero_shot).identity() is None


def test_base_calibration_scores_are_reused_across_fine_tunes_of_one_base(canary_llm, tiny_llama_dir, tiny_dataset,
                                                                          tmp_path):
    """A second fine-tune calibrated by the same base reuses the base's scores (said in the
    details) and gets the AUROC that scoring the base afresh gives."""
    from audit.probes import membership

    membership._REFERENCE_SCORES.clear()
    probe = MembershipInferenceProbe(MembershipConfig(attacks=["ref"]))
    with torch_threads(1):
        other = build(tiny_llama_dir, tiny_dataset, tmp_path,
                      [{"lora": {**LORA["lora"], "epochs": 2}}, {"mia-reference": {"base": True}}])
        first = probe.run(canary_llm, context(tiny_dataset, "membership"))
        reused = probe.run(other, context(tiny_dataset, "membership"))
        membership._REFERENCE_SCORES.clear()
        fresh = probe.run(other, context(tiny_dataset, "membership"))
    assert first.details["reference_scores"] == "computed" == fresh.details["reference_scores"]
    assert reused.details["reference_scores"].startswith("reused")
    assert reused.metrics["mia_auroc_ref"].value == fresh.metrics["mia_auroc_ref"].value
    assert reused.metrics["mia_auroc_ref"].value != first.metrics["mia_auroc_ref"].value  # another fine-tune
