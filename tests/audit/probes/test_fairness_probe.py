"""The counterfactual fairness probe flags a recommender whose lists depend on the gender in
the prompt, gives an attribute-blind one exactly zero sensitivity, handles intersections, and
records every list with its condition so the numbers can be recomputed from raw outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import yaml

from audit.cli import main
from audit.config import validate_config
from audit.data.dataset import Dataset
from audit.errors import ConfigError
from audit.fairness.metrics import jaccard_at_k, serp_star_notebook_at_k
from audit.interface import RecRequest, Recommender
from audit.parsing import normalize_title
from audit.probes.base import OutputRecorder, ProbeContext
from audit.probes.fairness import CounterfactualFairnessProbe, FairnessConfig
from audit.registry import PROBES
from fairness_testkit import RECS_MODULE, make_gendered_dataset


class AttributeBlind(Recommender):
    """Unseen films in a fixed catalog order; never looks at the profile."""

    capabilities = frozenset({"generate"})

    def __init__(self, dataset: Dataset) -> None:
        super().__init__()
        self.catalog = [dataset.item_titles[i] for i in sorted(dataset.item_titles, key=int)]

    def base_list(self, req: RecRequest, k: int) -> list[str]:
        seen = set(req.history)
        return [t for t in self.catalog if t not in seen][:k]

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [self.base_list(r, k) for r in reqs]


class GenderStereotyped(AttributeBlind):
    """Like AttributeBlind, but a prompt saying gender=F gets its top half replaced by a fixed
    'stereotyped' set of films (the neutral prompt is treated like a male user, as FaiRLLM found)."""

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for r in reqs:
            base = self.base_list(r, k)
            if r.profile.get("gender") == "F":
                stereo = [t for t in reversed(self.catalog) if t not in set(r.history)][: k // 2]
                base = stereo + [t for t in base if t not in stereo][: k - len(stereo)]
            out.append(base)
        return out


class AgeSensitive(AttributeBlind):
    """Drops the first film for users said to be 18-24; gender is ignored."""

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [self.base_list(r, k + 1)[1:] if r.profile.get("age") == "18-24" else self.base_list(r, k)
                for r in reqs]


class SeededRandom(AttributeBlind):
    """A random permutation per request (seeded by the request's content): noise, no bias."""

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for r in reqs:
            key = repr((r.history, sorted(r.profile.items()))).encode()
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
            out.append([self.catalog[i] for i in rng.permutation(len(self.catalog))[:k]])
        return out


class HeldOutForWomen(AttributeBlind):
    """Puts the user's held-out film first when the prompt says gender=F (alignment), and always
    for users who really are women (real-attribute utility disparity)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        self.test_title = {u: dataset.item_titles[s.test] for u, s in dataset.sequences.items() if s.test}
        self.gender = {u: p.get("gender") for u, p in dataset.user_profiles.items()}

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for r in reqs:
            said = r.profile.get("gender")
            first = said == "F" or (not r.profile and self.gender[r.user] == "F")
            base = [t for t in self.base_list(r, k + 1) if t != self.test_title[r.user]]
            out.append(([self.test_title[r.user]] + base)[:k] if first else base[:k])
        return out


def run_probe(rec: Recommender, dataset: Dataset, **options) -> tuple:
    options.setdefault("bootstrap", 200)
    options.setdefault("permutations", 200)
    cfg = validate_config(FairnessConfig, options, "probes.fairness")
    recorder = OutputRecorder(recommender="r", probe="fairness")
    ctx = ProbeContext(dataset=dataset, users=dataset.evaluable_users(), seed=0, recorder=recorder)
    return CounterfactualFairnessProbe(cfg).run(rec, ctx), recorder


def test_gender_dependent_lists_are_flagged_with_snsr_ci_excluding_zero(tiny_dataset: Dataset) -> None:
    result, _ = run_probe(GenderStereotyped(tiny_dataset), tiny_dataset, attributes=[["gender"]], k=10)
    assert result.status == "pass"
    m = result.metrics
    assert m["sim_jaccard_gender=M"].value == 1.0
    assert m["sim_jaccard_gender=F"].value < 0.5
    for name in ("jaccard", "serp", "prag"):
        snsr = m[f"snsr_{name}_gender"]
        assert snsr.n == 40
        assert snsr.ci is not None and snsr.ci[0] > 0.3, name
        assert m[f"pvalue_snsr_{name}_gender"].value < 0.01
        # two values: the population std is half the range
        assert m[f"snsv_{name}_gender"].value == pytest.approx(snsr.value / 2)


def test_attribute_blind_recommender_gets_exactly_zero_sensitivity(tiny_dataset: Dataset) -> None:
    result, _ = run_probe(AttributeBlind(tiny_dataset), tiny_dataset, attributes=[["gender"], ["age"]])
    for s in ("gender", "age"):
        for name in ("jaccard", "serp", "prag"):
            snsr = result.metrics[f"snsr_{name}_{s}"]
            assert snsr.value == 0.0 and snsr.ci == (0.0, 0.0)
            assert result.metrics[f"snsv_{name}_{s}"].value == 0.0
            assert result.metrics[f"pvalue_snsr_{name}_{s}"].value == 1.0


def test_seeded_random_lists_are_not_called_sensitive(tiny_dataset: Dataset) -> None:
    result, _ = run_probe(SeededRandom(tiny_dataset), tiny_dataset, attributes=[["gender"]])
    # random lists differ from the neutral one for every value alike: a small SNSR that the
    # permutation test does not mistake for an attribute effect
    assert result.metrics["sim_jaccard_gender=F"].value < 0.7
    for name in ("jaccard", "serp", "prag"):
        assert result.metrics[f"pvalue_snsr_{name}_gender"].value > 0.05


def test_intersection_sets_expand_to_every_value_combination(tiny_dataset: Dataset) -> None:
    result, recorder = run_probe(AgeSensitive(tiny_dataset), tiny_dataset,
                                 attributes=[["gender"], ["gender", "age"]], k=5)
    sets = result.details["sets"]
    assert sets["gender_age"]["conditions"] == [
        f"gender={g}&age={a}" for g in ("F", "M") for a in ("18-24", "25-34", "35-44")]
    assert result.metrics["sim_jaccard_gender=F&age=18-24"].value < 1.0
    assert result.metrics["sim_jaccard_gender=M&age=25-34"].value == 1.0
    assert result.metrics["snsr_jaccard_gender_age"].ci[0] > 0
    assert result.metrics["snsr_jaccard_gender"].value == 0.0
    prompts = {tuple(sorted(rec_["condition"].split("&"))) for rec_ in recorder.records}
    assert len(prompts) == 1 + 2 + 6 + 2  # neutral, gender, gender x age, the placebo's two values


def test_every_list_is_recorded_with_its_condition_and_recomputes_the_metric(tiny_dataset: Dataset) -> None:
    result, recorder = run_probe(GenderStereotyped(tiny_dataset), tiny_dataset, attributes=[["gender"]], k=6)
    records = recorder.records
    assert len(records) == 40 * 5  # neutral, two gender values, two placebo values
    assert {r["condition"] for r in records} == {"neutral", "gender=F", "gender=M", "placebo=morning",
                                                 "placebo=evening"}
    lists = {(r["user"], r["condition"]): [normalize_title(t) for t in r["parsed"]] for r in records}
    users = sorted({r["user"] for r in records})
    recomputed = np.mean([jaccard_at_k(lists[u, "gender=F"], lists[u, "neutral"], 6) for u in users])
    assert result.metrics["sim_jaccard_gender=F"].value == pytest.approx(recomputed)
    assert result.details["sets"]["gender"]["similarity"]["jaccard"]["gender=F"]["value"] == pytest.approx(recomputed)


def test_alignment_and_real_group_disparity_follow_the_held_out_item(tiny_dataset: Dataset) -> None:
    result, _ = run_probe(HeldOutForWomen(tiny_dataset), tiny_dataset, attributes=[["gender"]])
    m = result.metrics
    assert m["hr_gender=F"].value == 1.0 and m["hr_gender=M"].value == 0.0
    assert m["ndcg_gender=F"].value == 1.0
    # the neutral list hits only for real women: half of the users
    assert m["hr_neutral"].value == pytest.approx(0.5)
    assert m["hr_group_gender=F"].value == 1.0 and m["hr_group_gender=M"].value == 0.0
    assert m["hr_gap_gender"].value == 1.0 and m["hr_gap_gender"].ci == (1.0, 1.0)
    assert m["hr_diff_gender"].value == 1.0
    # with the user's own gender in the prompt, women hit and men do not either
    assert m["hr_gap_profiled_gender"].value == 1.0


def test_blind_recommender_shows_no_group_difference_beyond_noise(tiny_dataset: Dataset) -> None:
    result, _ = run_probe(AttributeBlind(tiny_dataset), tiny_dataset, attributes=[["gender"]])
    diff = result.metrics["hr_diff_gender"]
    f, m = result.metrics["hr_group_gender=F"], result.metrics["hr_group_gender=M"]
    assert diff.value == pytest.approx(f.value - m.value)
    assert diff.n == 40 and diff.ci[0] < 0 < diff.ci[1]
    assert result.details["sets"]["gender"]["group_utility"]["neutral"]["hr"]["diff"]["of"] == "gender=F - gender=M"


def test_unknown_attribute_names_the_data_sets_attributes(tiny_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="unknown attribute.*'income'.*gender, age, occupation"):
        run_probe(AttributeBlind(tiny_dataset), tiny_dataset, attributes=[["gender", "income"]])


def test_config_accepts_bare_names_and_rejects_empty_or_repeated_sets() -> None:
    cfg = validate_config(FairnessConfig, {"attributes": ["gender", ["gender", "age"]]}, "probes.fairness")
    assert cfg.attributes == [["gender"], ["gender", "age"]]
    with pytest.raises(ConfigError, match="empty"):
        validate_config(FairnessConfig, {"attributes": [[]]}, "probes.fairness")
    with pytest.raises(ConfigError, match="repeats"):
        validate_config(FairnessConfig, {"attributes": [["age", "age"]]}, "probes.fairness")
    with pytest.raises(ConfigError, match="unknown option 'kk'"):
        validate_config(FairnessConfig, {"kk": 3}, "probes.fairness")


def test_probe_is_registered_under_fairness() -> None:
    assert PROBES.get("fairness") is CounterfactualFairnessProbe
    assert CounterfactualFairnessProbe.requires == frozenset({"generate"})


# -- end to end: suite file -> python-adapter recommenders -> report -> gates -> exit code ----------

def write_fairness_suite(tmp_path: Path, gates: list[dict]) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    ds = make_gendered_dataset()
    ds.interactions.to_csv(data / "interactions.csv", index=False)
    ds.items.to_csv(data / "items.csv", index=False)
    ds.users.to_csv(data / "users.csv", index=False)
    (tmp_path / "recaudit_fairness_recs.py").write_text(RECS_MODULE)
    suite = {
        "name": "fairness-gates",
        "dataset": {"name": "csv", "interactions": "data/interactions.csv", "items": "data/items.csv",
                    "users_file": "data/users.csv"},
        "recommenders": {name: {"adapter": "python", "generate": f"recaudit_fairness_recs:{name}"}
                         for name in ("stereotyped", "blind", "noise")},
        "probes": {"fairness": {"attributes": [["gender"]], "k": 10, "bootstrap": 200, "permutations": 200},
                   # logistic only: the MLP attacker (tests/audit/fairness) cost 90% of this test
                   "leakage": {"attributes": [["gender"]], "sources": ["list"], "bootstrap": 300,
                               "attackers": ["logistic"]}},
        "gates": gates,
    }
    path = tmp_path / "fairness.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def test_suite_gate_on_snsr_fails_with_exit_code_1_for_the_gender_dependent_recommender(
        tmp_path: Path, recaudit_home: Path) -> None:
    gate = {"probe": "fairness", "metric": "snsr_jaccard_gender", "op": "<=", "threshold": 0.1}
    suite = write_fairness_suite(tmp_path, [{**gate, "recommender": "stereotyped"},
                                            {**gate, "recommender": "blind"}])
    out = tmp_path / "report"
    assert main(["run", str(suite), "--out", str(out), "--quiet"]) == 1

    report = json.loads((out / "report.json").read_text())
    gates = {g["recommender"]: g["passed"] for g in report["gates"]}
    assert gates == {"stereotyped": False, "blind": True}
    results = {(r["recommender"], r["probe"]): r for r in report["results"]}
    biased = results["stereotyped", "fairness"]["metrics"]["snsr_jaccard_gender"]
    assert biased["ci"][0] > 0
    assert results["blind", "fairness"]["metrics"]["snsr_jaccard_gender"]["value"] == 0.0
    # the biased recommender's neutral lists follow the gendered histories: the attacker sees gender
    assert results["stereotyped", "leakage"]["metrics"]["auc_list_gender"]["value"] > 0.9
    noise_auc = results["noise", "leakage"]["metrics"]["auc_list_gender"]
    assert noise_auc["ci"][0] <= 0.5 <= noise_auc["ci"][1]

    outputs = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    fairness_conditions = {o["condition"] for o in outputs if o["probe"] == "fairness"}
    assert fairness_conditions == {"neutral", "gender=F", "gender=M", "placebo=morning", "placebo=evening"}

    only_blind = write_fairness_suite(tmp_path, [{**gate, "recommender": "blind"}])
    assert main(["run", str(only_blind), "--out", str(tmp_path / "report2"), "--quiet"]) == 0


@pytest.mark.slow
def test_on_ml100k_the_planted_gender_effect_is_found_and_the_blind_model_is_clean(ml100k: Dataset) -> None:
    users = ml100k.sample_users(150, 0)
    cfg = validate_config(FairnessConfig, {"attributes": [["gender"], ["occupation"], ["gender", "age"]],
                                           "bootstrap": 300, "permutations": 300}, "probes.fairness")
    for rec, flagged in ((GenderStereotyped(ml100k), True), (AttributeBlind(ml100k), False)):
        ctx = ProbeContext(dataset=ml100k, users=users, seed=0, recorder=OutputRecorder("r", "fairness"))
        m = CounterfactualFairnessProbe(cfg).run(rec, ctx).metrics
        assert len(ctx.recorder.records) == 150 * (1 + 2 + 21 + 14 + 2)  # + 2 placebo conditions
        if flagged:
            assert m["snsr_jaccard_gender"].ci[0] > 0.3 and m["pvalue_snsr_jaccard_gender"].value < 0.01
        else:
            assert m["snsr_jaccard_gender"].value == 0.0 and m["snsr_prag_gender_age"].value == 0.0
        assert m["snsr_jaccard_occupation"].value == 0.0  # neither looks at occupation


class AnyPromptChange(AttributeBlind):
    """Shifts its list by one whenever the prompt carries any profile value other than the first
    (sorted) one of its attribute: sensitive to *changing the prompt*, not to gender as such."""

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        out = []
        for r in reqs:
            moved = any(v in ("M", "evening") for v in r.profile.values())
            items = self.base_list(r, k + 1)
            out.append(items[1:] if moved else items[:k])
        return out


def test_placebo_control_separates_gender_sensitivity_from_prompt_sensitivity(tiny_dataset: Dataset) -> None:
    """Issue 14: the placebo (a non-sensitive attribute) shows how much SNSR any prompt change
    causes; SNSR in excess of it is the attribute's own effect; p-values are Holm-adjusted and
    SNSV has one too."""
    result, _ = run_probe(GenderStereotyped(tiny_dataset), tiny_dataset, attributes=[["gender"]], k=10)
    m = result.metrics
    assert m["snsr_jaccard_placebo"].value == 0.0
    assert m["snsr_excess_jaccard_gender"].ci[0] > 0.3
    assert m["pvalue_snsv_jaccard_gender"].value < 0.01
    family = result.details["multiple_testing"]["family"]
    assert "pvalue_snsr_jaccard_gender" in family and "Holm" in result.details["multiple_testing"]["method"]
    for name in family:
        adjusted = m["pvalue_holm_" + name[len("pvalue_"):]].value
        assert m[name].value <= adjusted <= 1.0
    assert result.undeclared() == []

    prompt_driven, _ = run_probe(AnyPromptChange(tiny_dataset), tiny_dataset, attributes=[["gender"]], k=10)
    pm = prompt_driven.metrics
    assert pm["snsr_jaccard_gender"].ci[0] > 0.1  # looks gender-sensitive on its own ...
    lo, hi = pm["snsr_excess_jaccard_gender"].ci
    assert lo <= 0.0 <= hi  # ... but no more than the placebo


def test_notebook_compatible_serp_and_prag_are_reported_beside_the_papers(tiny_dataset: Dataset) -> None:
    """Issue 14: the FaiRLLM notebook's SERP*/PRAG* come as separately named, declared metrics
    (identical K = 10 lists: 0.2955 in its SERP*, 1 in the paper's); they add no p-values, so
    the Holm family is the paper's measures' alone."""
    result, recorder = run_probe(GenderStereotyped(tiny_dataset), tiny_dataset, attributes=[["gender"]], k=10)
    m = result.metrics
    assert m["sim_serp_gender=M"].value == 1.0
    assert m["sim_serpnb_gender=M"].value == pytest.approx(13 / 44)
    assert m["sim_pragnb_gender=M"].value == 1.0
    # recomputed from the recorded lists with the notebook's formula
    lists: dict[str, dict[str, list[str]]] = {}
    for rec in recorder.records:
        lists.setdefault(rec["condition"], {})[rec["user"]] = [normalize_title(t) for t in rec["parsed"]]
    expected = np.mean([serp_star_notebook_at_k(lists["gender=F"][u], lists["neutral"][u], 10) for u in lists["neutral"]])
    assert m["sim_serpnb_gender=F"].value == pytest.approx(expected)
    assert m["snsr_serpnb_gender"].value == pytest.approx(13 / 44 - expected)
    assert m["snsr_serpnb_gender"].ci[0] > 0 and m["snsr_pragnb_gender"].value > 0
    for name in ("sim_serpnb_gender=F", "snsr_serpnb_gender", "snsv_pragnb_gender"):
        assert m[name].spec is not None and "notebook" in m[name].spec.meaning
    assert not [n for n in m if n.startswith("pvalue_") and "nb_" in n]
    assert "serpnb" in result.details["similarities"] and "notebook" in result.details["sets"]["gender"]
