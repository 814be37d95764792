"""Item tokens on ``hf`` causal LMs (``items: tokens``): tiny random Llama, GPT-NeoX and Qwen2 models
through the same code paths. The item rows start at the mean of their titles' token embeddings,
only LoRA and the item rows move in training, one forward gives each candidate the score it gets
alone, a planted next-item rule is learned, and bad options get one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.interface import RecRequest
from audit.llm.item_tokens import title_rows, title_token_ids
from audit.llm.item_training import ITEM_BIAS, ITEM_INPUT, ITEM_OUTPUT, ItemEntry
from tests.audit.llm.test_lora_architectures import PROJECTIONS, tiny_config
from tests.audit.llm.tiny_llama import build_hf

LORA = {"lora": {"epochs": 6, "layers": None, "lr": 1e-2, "batch_size": 8, "r": 4}}


@pytest.fixture(scope="module", params=["llama", "gpt_neox", "qwen2"])
def model_dir(request: pytest.FixtureRequest, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model of each architecture (the Llama is the session's tiny SmolLM2 stand-in)."""
    if request.param == "llama":
        return tiny_llama_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(request.param, tokenizer))
    directory = tmp_path_factory.mktemp(f"items-{request.param}")
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def request_of(dataset: Dataset, user: str, n: int = 5) -> RecRequest:
    titles = dataset.item_titles
    return RecRequest(history=tuple(titles[i] for i in dataset.sequences[user].train[-n:]),
                      profile=dict(dataset.user_profiles.get(user, {})), user=user)


def test_item_rows_start_at_the_mean_of_their_title_token_embeddings(model_dir, tiny_dataset, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rec = build_hf(model_dir, tiny_dataset, tmp_path, items="tokens")
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    table = base.get_input_embeddings().weight.detach()
    out_table = (base.get_output_embeddings() or base.get_input_embeddings()).weight.detach()
    for row, item in enumerate(rec.vocab.items):
        ids = tokenizer(" " + tiny_dataset.item_titles[item], add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(rec.item_lm.embedding.items.weight[row], table[ids].mean(0))
        torch.testing.assert_close(rec.item_lm.head.linear.weight[row], out_table[ids].mean(0))
    assert float(rec.item_lm.head.linear.bias.abs().max()) == 0.0
    # the ablation: seeded random rows of the same per-coordinate scale, not the titles' means
    ids = title_token_ids(tokenizer, [tiny_dataset.item_titles[i] for i in rec.vocab.items])
    means, random = title_rows(table, ids, "titles", 0), title_rows(table, ids, "random", 0)
    assert not torch.allclose(means, random)
    torch.testing.assert_close(random, title_rows(table, ids, "random", 0))
    assert float(random.std(0).mean()) == pytest.approx(float(means.std(0).mean()), rel=0.3)
    # the text vocabulary is untouched: ids below the item tokens embed as before
    text = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(rec.item_lm.embedding(text), base.get_input_embeddings()(text))


def test_one_forward_scores_every_candidate_as_it_scores_each_alone(model_dir, tiny_dataset, tmp_path) -> None:
    rec = build_hf(model_dir, tiny_dataset, tmp_path, items="tokens")
    titles = list(tiny_dataset.item_titles.values())
    reqs = [request_of(tiny_dataset, u) for u in ("1", "2", "3")]
    together = rec.score(reqs, [titles] * 3)
    for r, req in enumerate(reqs):
        alone = np.array([rec.score([req], [[t]])[0][0] for t in titles[:6]])
        np.testing.assert_allclose(together[r][:6], alone, rtol=1e-5, atol=1e-5)
        assert np.exp(together[r]).sum() == pytest.approx(1.0, abs=1e-4)  # a softmax over the catalog
    # a batch of prompts of different lengths (left padding) gives each prompt's own scores
    alone = rec.score([request_of(tiny_dataset, "1", n=2)], [titles])[0]
    mixed = rec.score([request_of(tiny_dataset, "1", n=2), reqs[1]], [titles, titles])[0]
    np.testing.assert_allclose(mixed, alone, rtol=1e-5, atol=1e-5)
    assert rec.score([reqs[0]], [["No Such Film (2042)"]])[0][0] == -np.inf


def test_generate_returns_catalog_titles_outside_the_history(model_dir, tiny_dataset, tmp_path) -> None:
    rec = build_hf(model_dir, tiny_dataset, tmp_path, items="tokens")
    req = request_of(tiny_dataset, "4")
    [gen] = rec.generate_detailed([req], 7)
    assert len(gen.items) == 7 and len(set(gen.items)) == 7
    assert set(gen.items) <= set(tiny_dataset.item_titles.values()) and not set(gen.items) & set(req.history)
    scores = rec.score([req], [list(gen.items)])[0]
    assert list(scores) == sorted(scores, reverse=True)  # the likeliest first
    assert "<item_" in gen.prompt and gen.prompt.startswith("User profile:")


def test_training_moves_only_lora_and_the_item_rows_and_learns(model_dir, tiny_dataset, tmp_path) -> None:
    torch.set_num_threads(1)
    zero = build_hf(model_dir, tiny_dataset, tmp_path, items="tokens")
    tuned = build_hf(model_dir, tiny_dataset, tmp_path, LORA, items="tokens")
    base = dict(zero.item_lm.named_parameters())
    moved = {n for n, p in tuned.item_lm.named_parameters() if not torch.equal(p, base[n])}
    projections = {p for names in PROJECTIONS.values() for p in names}
    # merged LoRA moves the targeted projections; nothing else of the base (text embeddings, norms) moves
    frozen = [n for n in moved if not n.startswith("head.") and not n.endswith("embed_tokens.items.weight")
              and not n.endswith("embed_in.items.weight") and n.rsplit(".", 2)[-2] not in projections]
    assert moved and not frozen, frozen
    assert {"head.linear.weight", "head.linear.bias"} <= moved and any(n.endswith("items.weight") for n in moved)
    entry = Path(tuned.info["lora_dir"])
    state = ItemEntry.read_state(entry)
    assert {ITEM_INPUT, ITEM_OUTPUT, ITEM_BIAS} <= set(state) and any(k.startswith("lora.") for k in state)
    users = tuned.manifest["stages"][0]["users"]
    assert train_next_logp(tuned, tiny_dataset, users) > train_next_logp(zero, tiny_dataset, users) + 0.1
    # the cache serves the same model again without training
    again = build_hf(model_dir, tiny_dataset, tmp_path, LORA, items="tokens")
    assert again.info["trained_now"] is False
    reqs = [request_of(tiny_dataset, u) for u in users[:3]]
    titles = list(tiny_dataset.item_titles.values())
    np.testing.assert_allclose(np.array(again.score(reqs, [titles] * 3)), np.array(tuned.score(reqs, [titles] * 3)),
                               rtol=1e-5, atol=1e-5)


def train_next_logp(rec, dataset: Dataset, users: list[str]) -> float:
    """Mean log p of each user's last training item after the items before it."""
    titles = dataset.item_titles
    reqs = [RecRequest(history=tuple(titles[i] for i in dataset.sequences[u].train[:-1]),
                       profile=dict(dataset.user_profiles.get(u, {}))) for u in users]
    items = [[titles[dataset.sequences[u].train[-1]]] for u in users]
    return float(np.mean([s[0] for s in rec.score(reqs, items)]))


def planted_dataset(n_users: int = 60, n_items: int = 20, seed: int = 0) -> Dataset:
    """Random sequences in which item 2 always comes right after item 1."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [str(i) for i in range(1, n_items + 1)],
                          "title": [f"Picture {i}" for i in range(1, n_items + 1)],
                          "year": pd.array([2000] * n_items, dtype="Int64"), "genres": ["Drama"] * n_items})
    rows = []
    for u in range(1, n_users + 1):
        seq = [int(i) for i in rng.choice(np.arange(3, n_items + 1), size=8, replace=False)]
        at = int(rng.integers(0, 6))
        seq[at:at] = [1, 2]
        rows += [(str(u), str(i), 4.0, 1000 * u + t) for t, i in enumerate(seq)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Dataset("planted", inter, items, None, source="synthetic")


def test_a_planted_next_item_rule_is_learned(tiny_llama_dir, tmp_path) -> None:
    torch.set_num_threads(1)
    data = planted_dataset()
    rec = build_hf(tiny_llama_dir, data, tmp_path, {"lora": {**LORA["lora"], "epochs": 8}}, items="tokens")
    titles = data.item_titles
    before = build_hf(tiny_llama_dir, data, tmp_path, items="tokens")
    # "Picture 2" follows "Picture 1" in every training sequence, whatever came before
    reqs = [RecRequest(history=(titles[str(a)], titles["1"])) for a in range(3, 13)]
    assert all(g.items == (titles["2"],) for g in rec.generate_detailed(reqs, 1))
    after_p = np.exp([s[0] for s in rec.score(reqs, [[titles["2"]]] * len(reqs))])
    before_p = np.exp([s[0] for s in before.score(reqs, [[titles["2"]]] * len(reqs))])
    assert after_p.min() > 0.5 and before_p.max() < 0.2
    # and only after "Picture 1": after another item it is no likelier than the rest
    other = rec.score([RecRequest(history=(titles["7"], titles["9"]))], [[titles["2"]]])[0][0]
    assert np.exp(other) < 0.2


def test_bad_item_token_options_fail_at_build_with_one_message(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="targets"):
        build_hf(tiny_llama_dir, tiny_dataset, tmp_path, {"lora": {"targets": 3}}, items="tokens")
    with pytest.raises(ConfigError, match="history"):
        build_hf(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens",
                 prompts={"generate": {"completion": "no history field here"}})
    assert not list(tmp_path.glob("item-lora/*"))  # nothing half-written in the model cache


def test_the_hallucination_probe_reports_a_closed_catalog_by_construction(tiny_llama_dir, tiny_dataset,
                                                                          tmp_path) -> None:
    from audit.probes.base import OutputRecorder, ProbeContext
    from audit.probes.hallucination import HallucinationConfig, HallucinationProbe

    rec = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens")
    ctx = ProbeContext(dataset=tiny_dataset, users=tiny_dataset.evaluable_users()[:10], seed=0,
                       recorder=OutputRecorder("llm", "hallucination"))
    result = HallucinationProbe(HallucinationConfig(k=5)).run(rec, ctx)
    assert result.status == "pass"
    assert result.metrics["hallucination_rate"].value == 0.0 and result.metrics["hallucination_rate"].n == 10
    assert result.metrics["duplicate_rate"].value == 0.0 and result.metrics["consumed_rate"].value == 0.0
    assert "by construction" in result.details["closed_catalog"]


def test_memorisation_scores_a_window_as_the_model_predicts_each_next_item(tiny_llama_dir, tiny_dataset,
                                                                            tmp_path) -> None:
    """The memorisation probes' ``tokens`` path on the model's own format (prefix text, then item
    tokens) gives each item the log-probability ``score`` gives it as the next item."""
    from audit.memorisation.sequences import score_sequences

    rec = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens")
    titles = tiny_dataset.item_titles
    seq = list(tiny_dataset.sequences["3"].train[:6])
    profile = dict(tiny_dataset.user_profiles["3"])
    [scored], how, note = score_sequences(rec, [seq], [profile], titles)
    assert how.startswith("tokens") and len(scored.logp) == len(seq) and "<item_" in scored.text
    expected = [rec.score([RecRequest(history=tuple(titles[i] for i in seq[:t]), profile=profile)],
                          [[titles[seq[t]]]])[0][0] for t in range(len(seq))]
    np.testing.assert_allclose(scored.logp, expected, rtol=1e-4, atol=1e-4)


def test_a_variant_needing_title_text_is_refused_at_load_for_item_tokens(tiny_llama_dir, tmp_path) -> None:
    """``constrained-decoding`` constrains generated title text (capability ``constrain``), which an
    item-token model does not declare: the suite is refused at load with exit 2, before any model loads."""
    from audit.cli import main
    from tests.audit.runner_testkit import write_suite

    suite = {"name": "items-fair", "dataset": {"users": 6, "seed": 0},
             "recommenders": {"llm": {"adapter": "hf", "path": str(tiny_llama_dir), "items": "tokens",
                                      "variant": "constrained-decoding"}},
             "probes": {"utility": {"k": [5], "negatives": 5}}}
    from tests.conftest import make_tiny_dataset

    path = write_suite(tmp_path / "suite", suite, dataset=make_tiny_dataset())
    assert main(["run", str(path), "--out", str(tmp_path / "report"), "--quiet"]) == 2
    assert not (tmp_path / "report").exists() or not list((tmp_path / "report").glob("*.json"))


def test_every_probe_runs_on_an_item_token_model_through_recaudit_run(tiny_llama_dir, tiny_dataset, recaudit_home,
                                                                     tmp_path) -> None:
    """``recaudit run`` on a LoRA-tuned item-token model with canaries: the probes that apply pass, none errors."""
    import json

    from audit.cli import main
    from tests.audit.runner_testkit import write_suite

    suite = {"name": "items-all", "dataset": {"seed": 0},
             "recommenders": {"llm": {"adapter": "hf", "path": str(tiny_llama_dir), "items": "tokens", "history": 6,
                                      "variant": [{"lora": {"epochs": 1, "r": 4, "layers": None}},
                                                  {"canaries": {"repetitions": [1, 4], "per_repetition": 2, "length": 4, "audit_canaries": 8}}]}},
             "probes": {"utility": {"k": [5], "negatives": 9}, "fairness": {"k": 5, "users": 6},
                        "leakage": {}, "hallucination": {"k": 5, "users": 6}, "membership": {},
                        "canary": {}, "extraction": {}, "ranking": {"users": 6, "candidates": 10}}}
    path = write_suite(tmp_path / "suite", suite, dataset=tiny_dataset)
    code = main(["run", str(path), "--out", str(tmp_path / "report"), "--quiet"])
    report = json.loads(next((tmp_path / "report").glob("*.json")).read_text())
    status = {r["probe"]: (r["status"], r.get("reason")) for r in report["results"]}
    assert code in (0, 1), status
    assert not [p for p, (s, _) in status.items() if s == "error"], status
    assert status["utility"][0] == "pass" and status["hallucination"][0] == "pass"
    assert status["membership"][0] == "pass" and status["canary"][0] == "pass"


def test_the_item_text_attack_refuses_a_model_that_never_reads_titles(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="never reads them"):
        build_hf(tiny_llama_dir, tiny_dataset, tmp_path, {"item-text": {}}, items="tokens")


def test_token_logprobs_of_a_padded_batch_equal_each_text_alone(tiny_llama_dir, tiny_dataset, tmp_path) -> None:
    rec = build_hf(tiny_llama_dir, tiny_dataset, tmp_path, items="tokens")
    titles = tiny_dataset.item_titles
    texts = ["".join(rec.render_sequence(list(tiny_dataset.sequences[u].train[:n]), {}, titles))
             for u, n in (("1", 2), ("2", 7), ("3", 4))] + ["plain words, no items"]
    together = rec.token_logprobs(texts)
    for text, lp in zip(texts, together):
        [alone] = rec.token_logprobs([text])
        assert len(lp) == len(alone) == len(rec.text_item_ids(text)) - 1
        np.testing.assert_allclose(lp, alone, rtol=1e-5, atol=1e-5)


def test_the_adapters_default_history_is_the_recipes() -> None:
    from audit.adapters.hf_items import ITEM_HISTORY
    from audit.llm.item_training import ItemRecipe

    assert ITEM_HISTORY == ItemRecipe().history, "one default: scoring prompts as long as training windows"
