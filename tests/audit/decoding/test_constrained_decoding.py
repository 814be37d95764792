"""Constrained decoding on a real (tiny, random) transformers model through the ``hf`` adapter:
the unconstrained model writes garbage, the constrained one only catalog titles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audit.adapters.hf import HFAdapter, HFConfig
from audit.data.dataset import Dataset
from audit.decoding.constrained import (ConstrainedDecodingConfig, ConstrainedDecodingVariant,
                                        ConstrainedRecommender)
from audit.errors import ConfigError
from audit.interface import RecRequest, Recommender
from audit.parsing import normalize_title
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.hallucination import HallucinationConfig, HallucinationProbe
from audit.probes.ranking import CandidateRankingProbe, RankingConfig
from audit.variants import BuildContext


def hf(path: Path, **opts: object) -> HFAdapter:
    return HFAdapter.build(HFConfig(path=str(path), max_new_tokens=24, batch_size=4, **opts))


def probe_ctx(ds: Dataset, name: str) -> ProbeContext:
    return ProbeContext(dataset=ds, users=ds.evaluable_users()[:8], seed=0, recorder=OutputRecorder("m", name))


def test_unconstrained_random_model_hallucinates_constrained_one_does_not(
        random_lm_dir: Path, tiny_dataset: Dataset, build_ctx: BuildContext) -> None:
    probe = HallucinationProbe(HallucinationConfig(k=4))
    plain = probe.run(hf(random_lm_dir), probe_ctx(tiny_dataset, "hallucination"))
    pm = plain.metrics
    # garbage: almost no parseable catalog titles
    assert pm["compliance_rate"].value < 0.5 or pm["hallucination_rate"].value > 0.5

    rec = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(hf(random_lm_dir), build_ctx)
    ctx = probe_ctx(tiny_dataset, "hallucination")
    result = probe.run(rec, ctx)
    m = result.metrics
    assert m["hallucination_rate"].value == 0.0 and m["hallucination_rate"].n == 8
    assert m["compliance_rate"].value == 1.0
    assert m["duplicate_rate"].value == 0.0
    assert m["fuzzy_match_rate"].value == 0.0  # every slot is a catalog title verbatim
    catalog = set(tiny_dataset.item_titles.values())
    for record in ctx.recorder.records:
        assert len(record["parsed"]) == 4
        assert all(t in catalog for t in record["parsed"]), record["raw"]
        assert record["raw"].startswith("1. ")


def test_lines_layout_and_repeats_allowed(random_lm_dir: Path, tiny_dataset: Dataset,
                                          build_ctx: BuildContext) -> None:
    cfg = ConstrainedDecodingConfig(layout="lines", block_repeats=False)
    rec = ConstrainedDecodingVariant(cfg).wrap(hf(random_lm_dir), build_ctx)
    gens = rec.generate_detailed([RecRequest(history=("Film Number 3 (1993)",))], 3)
    catalog = set(tiny_dataset.item_titles.values())
    assert len(gens[0].items) == 3 and all(t in catalog for t in gens[0].items)
    assert len(gens[0].raw.strip().split("\n")) == 3


def test_ranking_requests_stay_inside_their_candidates(random_lm_dir: Path, tiny_dataset: Dataset,
                                                       build_ctx: BuildContext) -> None:
    rec = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(hf(random_lm_dir), build_ctx)
    probe = CandidateRankingProbe(RankingConfig(candidates=8, k=3, positions=["first", "last"],
                                                batch_size=3))
    result = probe.run(rec, probe_ctx(tiny_dataset, "ranking"))
    assert result.metrics["out_of_candidate_rate"].value == 0.0
    assert result.metrics["compliance_rate"].value == 1.0


def test_token_budget_is_raised_so_lists_are_never_cut(random_lm_dir: Path, build_ctx: BuildContext) -> None:
    rec = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(hf(random_lm_dir), build_ctx)
    assert isinstance(rec, ConstrainedRecommender)
    rec.generate_detailed([RecRequest(history=())], 6)
    needed = rec.layout.list_format(6).tokens_per_list(6, rec.trie.max_depth)
    assert rec.inner.config.max_new_tokens >= needed
    assert rec.info["constrained_decoding"]["items"] == 30


def test_trie_holds_each_catalog_title_in_the_models_tokenizer(random_lm_dir: Path, tiny_dataset: Dataset,
                                                               build_ctx: BuildContext) -> None:
    rec = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(hf(random_lm_dir), build_ctx)
    tok = rec.inner.tokenizer
    decoded = {tok.decode(list(seq)).strip(): keys for seq, keys in rec.trie.sequences()}
    assert {normalize_title(t) for t in decoded} == {normalize_title(t) for t in tiny_dataset.item_titles.values()}


def test_black_box_adapter_is_refused_with_a_pointer_to_grounding(build_ctx: BuildContext) -> None:
    class BlackBox(Recommender):
        capabilities = frozenset({"generate"})

        def generate(self, reqs, k):
            return [[] for _ in reqs]

    with pytest.raises(ConfigError, match="grounding"):
        ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(BlackBox(), build_ctx)


class FactoryHookRecommender(Recommender):
    """A third-party harness-run model declaring ``constrain`` with the reference adapter's hook
    style: the attribute ``generation_constraint`` holds a ``(prompt_length) -> LogitsProcessor``
    factory (it implements the ConstrainableGeneration protocol, nothing else)."""

    capabilities = frozenset({"generate", "constrain"})
    constraint_mode = "factory"

    def constraint_layout(self, style):
        from audit.llm.layout import TextLayout

        return TextLayout(self.tokenizer, style)

    def constraint_batch_size(self) -> int:
        return 1

    def reserve_new_tokens(self, tokens: int) -> int:
        return 120

    def __init__(self, path: Path) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        self.generation_constraint = None
        self.calls_with_constraint = 0

    def generate_detailed(self, reqs, k):
        from transformers import LogitsProcessorList

        from audit.interface import Generation
        from audit.parsing import parse_item_list

        out = []
        for r in reqs:
            prompt = "Watched: " + "; ".join(r.history) + "\n"
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
            procs = LogitsProcessorList()
            if self.generation_constraint is not None:
                procs.append(self.generation_constraint(ids.shape[1]))
                self.calls_with_constraint += 1
            seq = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=120,
                                      do_sample=False, logits_processor=procs,
                                      pad_token_id=self.tokenizer.eos_token_id)
            raw = self.tokenizer.decode(seq[0, ids.shape[1]:], skip_special_tokens=True)
            out.append(Generation(prompt=prompt, raw=raw, items=tuple(parse_item_list(raw, k))))
        return out


def test_factory_style_hook_is_installed_per_call_and_restored(random_lm_dir: Path, tiny_dataset: Dataset,
                                                               build_ctx: BuildContext) -> None:
    inner = FactoryHookRecommender(random_lm_dir)
    rec = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(inner, build_ctx)
    assert rec.info["constrained_decoding"]["hook"] == "factory"
    gens = rec.generate_detailed([RecRequest(history=("Film Number 2 (1992)",)), RecRequest(history=())], 3)
    catalog = set(tiny_dataset.item_titles.values())
    assert all(len(g.items) == 3 and set(g.items) <= catalog for g in gens)
    assert inner.generation_constraint is None and inner.calls_with_constraint == 2
    plain = inner.generate_detailed([RecRequest(history=())], 3)  # the inner model stays unconstrained
    assert not set(plain[0].items) <= catalog or len(plain[0].items) < 3


def test_logits_processor_keeps_every_beam_on_a_catalog_item(random_lm_dir: Path, tiny_dataset: Dataset) -> None:
    """Single-item sequences under beam search (the reference model's decoding): every
    returned beam is one complete catalog item followed by the end token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from audit.decoding.list_constraint import ListConstraint, ListFormat
    from audit.decoding.trie import TokenTrie

    tok = AutoTokenizer.from_pretrained(random_lm_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(random_lm_dir, local_files_only=True).eval()
    eos = tok.eos_token_id
    trie = TokenTrie.from_sequences({i: tuple(tok(" " + t, add_special_tokens=False)["input_ids"])
                                     for i, t in tiny_dataset.item_titles.items()})
    constraint = ListConstraint(trie, ListFormat(separator=(), end=(eos,), stop=(eos,)), 1)
    prompts = tok(["Watched: Film Number 1 (1991)\n", "Watched:\n"], return_tensors="pt", padding=True,
                  padding_side="left")
    width = prompts["input_ids"].shape[1]
    out = model.generate(**prompts, max_new_tokens=trie.max_depth + 1, num_beams=5, num_return_sequences=5,
                         do_sample=False, pad_token_id=eos, eos_token_id=eos,
                         logits_processor=LogitsProcessorList([constraint.logits_processor(width, 5)]))
    rows = out[:, width:].tolist()
    for prompt_rows in (rows[:5], rows[5:]):
        bodies = [tuple(row[: row.index(eos)]) for row in prompt_rows]
        assert all(trie.lookup(b) for b in bodies), [tok.decode(list(b)) for b in bodies]
        assert len(set(bodies)) == 5  # five distinct items per prompt


def test_beam_search_returns_k_distinct_items_when_end_differs_from_padding(random_lm_dir: Path) -> None:
    """The reference model's setting: each beam is one item closed by an end token that is not
    the padding token, early stopping on. Finished beams kept running may only pad, so they
    never re-enter the hypotheses as duplicates and all k beams are distinct catalog items."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from audit.decoding.list_constraint import ListConstraint, ListFormat
    from audit.decoding.trie import TokenTrie

    tok = AutoTokenizer.from_pretrained(random_lm_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(random_lm_dir, local_files_only=True).eval()
    end = tok("\n", add_special_tokens=False)["input_ids"][0]
    pad = tok.eos_token_id
    # items of very different lengths (1..24 tokens), so short beams finish long before long ones
    ids = [t for t in range(len(tok)) if t not in (end, pad)]
    trie = TokenTrie.from_sequences({f"item{i}": (ids[i], *[ids[40 + i]] * (i % 24)) for i in range(30)})
    constraint = ListConstraint(trie, ListFormat(separator=(), end=(end,), stop=(pad,)), 1)
    prompt = tok("Watched: Film Number 1 (1991)\n", return_tensors="pt")
    width = prompt["input_ids"].shape[1]
    k = 8
    out = model.generate(**prompt, max_new_tokens=trie.max_depth + 6, num_beams=k, num_return_sequences=k,
                         do_sample=False, early_stopping=True, length_penalty=0.0, pad_token_id=pad,
                         eos_token_id=end, output_scores=True, return_dict_in_generate=True,
                         logits_processor=LogitsProcessorList([constraint.logits_processor(width, k)]))
    bodies = [tuple(row[: row.index(end)]) for row in out.sequences[:, width:].tolist()]
    assert all(trie.lookup(b) for b in bodies)
    assert len(set(bodies)) == k
    assert bool((out.sequences_scores > -1e8).all())  # no masked hypothesis among the returned


def test_a_model_with_the_hook_but_without_the_declared_capability_is_refused(random_lm_dir: Path,
                                                                             build_ctx: BuildContext) -> None:
    inner = FactoryHookRecommender(random_lm_dir)
    inner.capabilities = frozenset({"generate"})  # implements the protocol, does not declare `constrain`
    with pytest.raises(ConfigError, match="does not declare"):
        ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(inner, build_ctx)


def test_a_wrapper_withholds_constrain_so_stacking_after_it_is_refused(random_lm_dir: Path,
                                                                       build_ctx: BuildContext) -> None:
    inner = FactoryHookRecommender(random_lm_dir)
    once = ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(inner, build_ctx)
    assert "constrain" not in once.capabilities and "generate" in once.capabilities
    with pytest.raises(ConfigError, match="does not declare"):
        ConstrainedDecodingVariant(ConstrainedDecodingConfig()).wrap(once, build_ctx)
