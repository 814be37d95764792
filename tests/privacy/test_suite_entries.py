"""Privacy variants as suite entries: built through the registry on the reference adapter,
measured by the ``privacy`` probe, and sharing one cached pretrain stage."""

from __future__ import annotations

import json

import pytest

from audit.build import build_recommender
from audit.config import validate_config
from audit.errors import ConfigError
from audit.interface import RecRequest
from audit.probes.base import OutputRecorder, ProbeContext
from audit.registry import PROBES
from audit.variants import BuildContext

TINY = {"adapter": "reference", "size": "tiny"}


def _privacy(rec, dataset):
    cls = PROBES.get("privacy")
    ctx = ProbeContext(dataset, dataset.user_ids(), 0, OutputRecorder(rec.name, "privacy"))
    return cls(validate_config(cls.Config, {}, "privacy")).run(rec, ctx)


def test_dp_and_finetune_entries_build_score_and_report_their_budget(tiny_dataset, recaudit_home, tmp_path):
    ctx = BuildContext(tiny_dataset, tmp_path, seed=0, progress=False)
    dp = build_recommender("dp", {**TINY, "variant": {"dp": {"epsilon": 4, "epochs": 2, "batch_size": 4,
                                                              "accountant": "rdp"}}}, ctx)
    plain = build_recommender("finetune", {**TINY, "variant": {"finetune": {"epochs": 2}}}, ctx)
    result = _privacy(dp, tiny_dataset)
    assert result.status == "pass" and result.metrics["epsilon"].value <= 4.0
    assert result.details["privacy_unit"] == "user"
    assert result.metrics["epsilon"].n == len(tiny_dataset.user_groups(seed=0).finetune)
    assert _privacy(plain, tiny_dataset).status == "skip"
    # both fine-tuned the same public pretrain stage: trained once (with dp), then resumed from its cache entry
    entries = sorted(p.name for p in (tmp_path / "reference").iterdir())
    assert len(entries) == 3  # the shared pretrain prefix, dp, finetune
    resumed = [json.loads((tmp_path / "reference" / e / "manifest.json").read_text()).get("resumed_from")
               for e in entries]
    assert sum(r is not None for r in resumed) == 1
    assert dp.info["training"][0] == plain.info["training"][0]  # the same pretrain record
    u = tiny_dataset.user_ids()[0]
    titles = tiny_dataset.item_titles
    req = RecRequest(history=tuple(titles[i] for i in tiny_dataset.sequences[u].train), candidates=tuple(
        list(titles.values())[:5]))
    scores = dp.score([req], [req.candidates])[0]
    assert scores.shape == (5,) and all(s < 0 for s in scores)


def test_dp_on_an_untrainable_adapter_is_a_config_error(tiny_dataset, tmp_path):
    ctx = BuildContext(tiny_dataset, tmp_path, seed=0, progress=False)
    with pytest.raises(ConfigError, match="variant 'dp' needs train-private.*adapters that support it: hf, reference"):
        build_recommender("x", {"adapter": "python", "generate": "builtins:print", "variant": {"dp": {"epsilon": 1}}},
                          ctx)
