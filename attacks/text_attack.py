"""Item-text attack at inference (after Zhang et al., ACL 2024) and the canonical-titles defense.

The attacker owns the target items and may rewrite their titles on the platform, within an
edit budget, without touching the model: word substitutions from a small synonym table and
inserted punctuation (the default ``operations``), and word deletions (``delete``: a title
likelihood summed over tokens favours short titles), at most ``max_edits`` edits measured as
the word-level Levenshtein distance (whitespace-separated words; the trailing year is never
edited, and a deletion keeps a word that is neither a stopword nor punctuation alone). The search is
black-box: for each target the attacker tries up to ``max_candidates`` rewrites on a few
queries of its own (``search_users`` users' histories, each with the target among
``search_candidates`` random other items) and keeps the rewrite whose mean rank is best
(by ``score`` when the recommender has it, else by its ``generate`` ranking); ties go to the
higher mean score margin, then to fewer edits. The rewrite then replaces the target's title
everywhere the recommender sees it (histories and candidate lists); generated titles equal
to a rewrite are mapped back to the item's catalog title, so exposure is counted per item.

``min_edits`` (default 1) makes the attacker always spend at least one edit, so the report
shows what the cheapest rewrites do even when none helps; ``min_edits: 0`` lets the search
keep the original title.

The defense ``canonical-titles`` grounds every title the model sees to its canonical catalog
text (:class:`audit.catalog.Catalog`: exact after normalisation -- which ignores punctuation
and case -- then rapidfuzz similarity >= ``threshold``) before the model sees it. A title below
the threshold goes to its nearest catalog title (``unmatched: nearest``, the default), or is
left as written (``unmatched: keep``) -- which lets an adaptive attacker escape the defense
with a rewrite just beyond the threshold (a synonym plus a mark), as the tests show. It always
sits between the attacker's text and the model: applied after ``item-text`` in a variant
list, it is inserted under the attack, and the attacker searches against the defended model
(the attacker faces the deployed system). The search runs when the attack is first used, so
the search against the undefended model, which the defense would discard, never runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field
from rapidfuzz.distance import Levenshtein

from attacks.targets import TargetSpec, select_targets
from audit.catalog import DEFAULT_SCORER, DEFAULT_THRESHOLD, SCORERS, Catalog
from audit.config import StrictConfig
from audit.data.dataset import Dataset
from audit.decoding.delegate import DelegatingRecommender
from audit.errors import ConfigError
from audit.interface import Generation, Recommender, RecRequest
from audit.metrics import rank_in_list, rank_of_target
from audit.parsing import normalize_title
from audit.progress import track
from audit.variants import BuildContext, Variant

#: a small synonym table of words frequent in film titles (lower case; both directions listed)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "film": ("movie",), "movie": ("film",), "story": ("tale",), "tale": ("story",),
    "man": ("guy",), "men": ("guys",), "woman": ("lady",), "women": ("ladies",),
    "girl": ("lass",), "boy": ("lad",), "love": ("romance",), "big": ("large", "huge"),
    "little": ("small", "tiny"), "small": ("little",), "night": ("evening",), "day": ("daytime",),
    "king": ("monarch",), "war": ("battle",), "house": ("home",), "home": ("house",),
    "world": ("earth",), "life": ("existence",), "dead": ("deceased",), "new": ("fresh",),
    "great": ("grand",), "best": ("finest",), "last": ("final",), "first": ("initial",),
    "good": ("fine",), "bad": ("evil",), "city": ("town",), "game": ("match",), "kiss": ("smooch",),
    "death": ("demise",), "fire": ("flame",), "heart": ("soul",), "dark": ("shadowy",),
    "lost": ("missing",), "secret": ("hidden",), "wild": ("untamed",), "head": ("mind",),
    "music": ("melody",), "wedding": ("marriage",), "gift": ("present",), "water": ("sea",),
    "above": ("over",), "in": ("inside",), "of": ("from",), "and": ("&",), "the": ("a",), "a": ("the",),
}
#: punctuation an attacker may append to a word
MARKS: tuple[str, ...] = ("!", "!!", ":", "*", "?")

_YEAR_TAIL = re.compile(r"\s*\(\d{4}\)\s*$")
_CORE = re.compile(r"^(\W*)(\w[\w']*)(\W*)$")


def split_year(title: str) -> tuple[str, str]:
    """'Heat (1995)' -> ('Heat', ' (1995)'); no year -> (title, '')."""
    m = _YEAR_TAIL.search(title)
    return (title[:m.start()], title[m.start():]) if m else (title, "")


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between the whitespace-separated words of ``a`` and ``b``."""
    return int(Levenshtein.distance(a.split(), b.split()))


@dataclass(frozen=True)
class Rewrite:
    """A rewritten title and its word-level edit distance to the original."""

    text: str
    edits: int


#: the word edits an attacker may make: a synonym for a word, a mark appended to it, or its deletion
OPERATIONS: tuple[str, ...] = ("substitute", "mark", "delete")
#: words that name nothing alone: a deletion must keep at least one other word (not punctuation alone)
STOPWORDS: frozenset[str] = frozenset({"the", "a", "an", "of", "and", "in", "on", "to", "for", "la",
                                       "le", "les", "il", "el", "der", "die", "das"})
Operation = Literal["substitute", "mark", "delete"]


def _names_something(word: str) -> bool:
    """Whether ``word``, stripped of punctuation, is neither empty nor a :data:`STOPWORDS` entry."""
    core = re.sub(r"\W", "", word).lower()
    return bool(core) and core not in STOPWORDS


def _single_edits(words: list[str], operations: Sequence[str]) -> list[tuple[int, str]]:
    """(word index, new word) for every one-word edit of the given kinds; "" deletes the word."""
    out: list[tuple[int, str]] = []
    for j, word in enumerate(words):
        m = _CORE.match(word)
        if m and "substitute" in operations:
            pre, core, post = m.groups()
            for syn in SYNONYMS.get(core.lower(), ()):
                new = syn.capitalize() if core[:1].isupper() else syn
                out.append((j, f"{pre}{new}{post}"))
        if "mark" in operations:
            out.extend((j, word + mark) for mark in MARKS)
        if "delete" in operations and len(words) > 1:
            out.append((j, ""))
    return out


def candidate_rewrites(title: str, *, max_edits: int = 2, min_edits: int = 1, limit: int = 24,
                       seed: int = 0, operations: Sequence[str] = ("substitute", "mark")) -> list[Rewrite]:
    """Rewrites of ``title`` with ``min_edits``..``max_edits`` word edits of the kinds in
    ``operations`` (:data:`OPERATIONS`; the year is kept, and after a deletion at least one word
    that is neither a :data:`STOPWORDS` entry nor punctuation alone), at most
    ``limit`` (a seeded sample when there are more); the original is included when
    ``min_edits`` is 0. Sorted by (edits, text)."""
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown:
        raise ValueError(f"unknown edit operations {unknown}; choose from {', '.join(OPERATIONS)}")
    body, year = split_year(title)
    words = body.split()
    singles = _single_edits(words, operations)
    found: dict[str, int] = {}
    if min_edits <= 0:
        found[title] = 0
    combos: list[tuple[tuple[int, str], ...]] = [(s,) for s in singles]
    if max_edits >= 2:
        combos += [pair for pair in itertools.combinations(singles, 2) if pair[0][0] != pair[1][0]]
    for combo in combos:
        new_words = list(words)
        for j, w in combo:
            new_words[j] = w
        kept = [w for w in new_words if w]
        if len(kept) < len(new_words) and not any(_names_something(w) for w in kept):
            continue  # deletions left nothing that names the item
        text = " ".join(kept) + year
        if text in found:
            continue
        d = word_edit_distance(title, text)
        if min_edits <= d <= max_edits:
            found[text] = d
    items = sorted(found.items(), key=lambda kv: (kv[1], kv[0]))
    if len(items) > limit:
        keep = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
        items = sorted((items[int(j)] for j in keep), key=lambda kv: (kv[1], kv[0]))
    return [Rewrite(text, d) for text, d in items]


# ---------------------------------------------------------------------------------------------
# recommenders
# ---------------------------------------------------------------------------------------------
class TitleRewritingRecommender(DelegatingRecommender):
    """Base for wrappers that change the titles in requests before ``inner`` sees them.

    Forwards generation, scoring, answer log-probabilities and answers, user embeddings and title
    embeddings with every title rewritten (generated titles mapped back);
    raw-text capabilities (``token_logprobs``, ``token-stats``, ``complete``) are withheld, since
    their texts would reach the model unrewritten."""

    withheld: ClassVar[frozenset[str]] = DelegatingRecommender.withheld | {"token-logprobs", "token-stats",
                                                                            "complete"}

    def rewrite_title(self, title: str) -> str:
        return title

    def rewrite(self, req: RecRequest) -> RecRequest:
        return RecRequest(history=tuple(self.rewrite_title(t) for t in req.history), profile=req.profile,
                          candidates=tuple(self.rewrite_title(t) for t in req.candidates), user=req.user)

    def map_back(self, title: str) -> str:
        return title

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        gens = self._through("generate").generate_detailed([self.rewrite(r) for r in reqs], k)
        return [Generation(prompt=g.prompt, raw=g.raw, items=tuple(self.map_back(t) for t in g.items))
                for g in gens]

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return self._through("score").score([self.rewrite(r) for r in reqs],
                                            [[self.rewrite_title(t) for t in row] for row in items])

    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        return self._through("answer-logprobs").answer_logprobs(
            [self.rewrite(r) for r in reqs], [[self.rewrite_title(t) for t in row] for row in answers], stats=stats)

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        gens = self._through("answer-generate").answer_generate([self.rewrite(r) for r in reqs], max_items)
        return [Generation(prompt=g.prompt, raw=g.raw, items=tuple(self.map_back(t) for t in g.items))
                for g in gens]

    def embed_user(self, reqs: Sequence[RecRequest]) -> np.ndarray:
        return self._through("embed-user").embed_user([self.rewrite(r) for r in reqs])

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        return self._through("embed").embed([self.rewrite_title(t) for t in titles])


@runtime_checkable
class AdaptiveAttack(Protocol):
    """A wrapping attack that an inference-time defense can put under itself: ``inner`` is the
    model it attacks, :meth:`attack_again` searches it afresh against ``defended`` (the defense
    wrapped around ``inner``), as an attacker who knows the defense would."""

    inner: Recommender

    def attack_again(self, defended: Recommender, ctx: BuildContext) -> Recommender: ...


class ItemTextAttackRecommender(TitleRewritingRecommender):
    """``inner`` seen through the attacker's rewritten target titles. ``baseline`` is the
    recommender without the attack (what the ``poisoning`` probe compares against). An
    :class:`AdaptiveAttack`: the canonical-titles defense re-runs the search through itself.

    ``rewrites`` is either the attack's {catalog title: rewrite} (with ``report``, the search's
    record), or a search, a callable returning (rewrites, report) that runs once, when the
    attack is first used: its rewrites, a rewritten call or its ``info`` read. So a defense
    that makes the attacker search again through it never pays for a search it discards."""

    def __init__(self, inner: Recommender,
                 rewrites: Mapping[str, str] | Callable[[], tuple[dict[str, str], dict[str, Any]]],
                 report: dict[str, Any] | None = None, *, config: ItemTextAttackConfig | None = None) -> None:
        self._search: Callable[[], tuple[dict[str, str], dict[str, Any]]] | None = None
        super().__init__(inner)
        self.config = config
        if config is not None:
            self._info["text_attack_config"] = config.model_dump(mode="json")
        if callable(rewrites):
            self._search = rewrites
        else:
            self._settle(dict(rewrites), report or {})

    def _settle(self, rewrites: dict[str, str], report: dict[str, Any]) -> None:
        self._rewrites = rewrites
        self._back = {v: k for k, v in rewrites.items()}
        self._back_norm = {normalize_title(v): k for k, v in rewrites.items()}
        self._info["text_attack"] = report

    def _searched(self) -> None:
        if self._search is not None:  # a search that raises stays pending
            self._settle(*self._search())
            self._search = None

    @property  # type: ignore[override]
    def info(self) -> dict[str, Any]:
        """The recommender's info, with the search's record (``text_attack``): reading it runs a
        pending search."""
        self._searched()
        return self._info

    @info.setter
    def info(self, value: dict[str, Any]) -> None:
        self._info = value

    @property
    def rewrites(self) -> dict[str, str]:
        """{catalog title: the attacker's rewrite} of each target (a pending search runs first)."""
        self._searched()
        return self._rewrites

    @property
    def searched(self) -> bool:
        """Whether the rewrite search has run (or the rewrites were given)."""
        return self._search is None

    @property
    def baseline(self) -> Recommender:
        return self.inner

    def attack_again(self, defended: Recommender, ctx: BuildContext) -> Recommender:
        cfg = self.config or ItemTextAttackConfig()
        return build_text_attack(defended, ctx.dataset, cfg, exclude=ctx.audit_users, progress=ctx.progress)

    def rewrite_title(self, title: str) -> str:
        return self.rewrites.get(title, title)

    def map_back(self, title: str) -> str:
        self._searched()
        if title in self._back:
            return self._back[title]
        return self._back_norm.get(normalize_title(title), title)


class CanonicalTitlesRecommender(TitleRewritingRecommender):
    """Grounds every history and candidate title to its canonical catalog text."""

    def __init__(self, inner: Recommender, catalog: Catalog, nearest: bool = True) -> None:
        super().__init__(inner)
        self.catalog = catalog
        self.nearest = nearest
        self._cache: dict[str, str] = {}
        self.counts = {"titles": 0, "changed": 0, "unmatched": 0}
        self.info["canonical_titles"] = self.counts

    def rewrite_title(self, title: str) -> str:
        out = self._cache.get(title)
        if out is None:
            m = self.catalog.match(title)
            item = m.item_id if m.item_id is not None else (m.nearest_id if self.nearest else None)
            out = self.catalog.titles[item] if item is not None else title
            self._cache[title] = out
            if m.item_id is None:
                self.counts["unmatched"] += 1
        self.counts["titles"] += 1
        self.counts["changed"] += out != title
        return out


def attacker_queries(dataset: Dataset, target: str, *, users: int, candidates: int, seed: int,
                     exclude: frozenset[str] | None = None) -> list[tuple[RecRequest, list[str]]]:
    """The attacker's own queries for one target: (request with the user's training history,
    ``candidates`` other item ids the user has not seen) for ``users`` seeded users who have
    not interacted with the target and are not in ``exclude`` (the run's audited users: the
    search must not be fitted on the users its effect is measured on)."""
    titles = dataset.item_titles
    pool = [u for u in dataset.evaluable_users()
            if target not in dataset.sequences[u].full and (exclude is None or u not in exclude)]
    if not pool:
        raise ConfigError(f"variant 'item-text': no user outside the run's audited users is left to search a "
                          f"rewrite of item {target} on; audit fewer users (the suite's dataset.users)")
    rng = np.random.default_rng([seed, int(target) if target.isdigit() else len(target)])
    chosen = [pool[int(j)] for j in rng.choice(len(pool), size=min(users, len(pool)), replace=False)]
    catalog = list(titles)
    out = []
    for u in sorted(chosen):
        seen = set(dataset.sequences[u].full) | {target}
        others = [i for i in catalog if i not in seen]
        picked = [others[int(j)] for j in rng.choice(len(others), size=min(candidates, len(others)), replace=False)]
        req = RecRequest(history=tuple(titles[i] for i in dataset.sequences[u].train),
                         profile=dataset.user_profiles.get(u, {}), user=u)
        out.append((req, picked))
    return out


def mean_rank(rec: Recommender, title: str, queries: Sequence[tuple[RecRequest, list[str]]],
              titles: dict[str, str]) -> tuple[float, float]:
    """(mean 1-based rank, mean score margin) of ``title`` put first among each query's
    candidates (ties: the expected rank under random tie order, :mod:`audit.metrics`); the margin is
    target score minus the best other score (NaN without ``score``)."""
    reqs = [RecRequest(history=q.history, profile=q.profile, user=q.user,
                       candidates=(title, *(titles[i] for i in others))) for q, others in queries]
    if rec.has("score"):
        scores = rec.score(reqs, [r.candidates for r in reqs])
        ranks = [rank_of_target(np.asarray(s, float), 0) for s in scores]
        margins = [float(s[0] - np.max(s[1:])) if len(s) > 1 else 0.0 for s in scores]
        return float(np.mean(ranks)), float(np.mean(margins))
    gens = rec.generate(reqs, len(reqs[0].candidates))
    key = normalize_title(title)
    ranks = [rank_in_list([normalize_title(t) for t in g], key, len(r.candidates)) for r, g in zip(reqs, gens)]
    return float(np.mean(ranks)), float("nan")


class ItemTextAttackConfig(StrictConfig):
    """``targets``: the target spec (same as the probe's); ``max_edits`` / ``min_edits``: the
    edit budget in word edits; ``operations``: the kinds of word edit (substitute a synonym,
    append a mark, delete the word); ``max_candidates``: rewrites tried per target;
    ``search_users``: attacker queries per rewrite; ``search_candidates``: other items in each
    query; ``seed``: seeds the rewrites and the search's queries."""

    targets: TargetSpec = TargetSpec()
    max_edits: int = Field(2, ge=1, le=5)
    min_edits: int = Field(1, ge=0)
    operations: list[Operation] = Field(default_factory=lambda: ["substitute", "mark"], min_length=1)
    max_candidates: int = Field(24, ge=1)
    search_users: int = Field(20, ge=1)
    search_candidates: int = Field(19, ge=1)
    seed: int = 0


def build_text_attack(rec: Recommender, dataset: Dataset, cfg: ItemTextAttackConfig,
                      exclude: frozenset[str] | None = None, progress: bool = False) -> ItemTextAttackRecommender:
    """Wrap ``rec`` with each target's rewrite, searched against ``rec`` (black-box) on users
    outside ``exclude`` (the run's audited users). The queries and rewrites to try are planned
    now (a bad budget or no user left to search on is a ConfigError at build); the search runs
    when the attack is first used (see :class:`ItemTextAttackRecommender`). Its query batches
    (one per target's original title and per rewrite tried) show progress with counts and an ETA."""
    if cfg.min_edits > cfg.max_edits:
        raise ConfigError(f"variant 'item-text': min_edits ({cfg.min_edits}) exceeds max_edits ({cfg.max_edits})")
    plans = []
    for target in select_targets(dataset, cfg.targets):
        queries = attacker_queries(dataset, target, users=cfg.search_users,
                                   candidates=cfg.search_candidates, seed=cfg.seed, exclude=exclude)
        options = candidate_rewrites(dataset.item_titles[target], max_edits=cfg.max_edits,
                                     min_edits=cfg.min_edits, limit=cfg.max_candidates, seed=cfg.seed,
                                     operations=cfg.operations)
        plans.append((target, dataset.item_titles[target], queries, options))

    def search() -> tuple[dict[str, str], dict[str, Any]]:
        return search_rewrites(rec, dataset.item_titles, plans, cfg, exclude is not None, progress)

    return ItemTextAttackRecommender(rec, search, config=cfg)


def search_rewrites(rec: Recommender, titles: dict[str, str],
                    plans: Sequence[tuple[str, str, Sequence[tuple[RecRequest, list[str]]], Sequence[Rewrite]]],
                    cfg: ItemTextAttackConfig, disjoint: bool, progress: bool,
                    ) -> tuple[dict[str, str], dict[str, Any]]:
    """Run the black-box search of each plan (target, original title, queries, rewrites to
    try) against ``rec``: ({original: best rewrite}, the search's report)."""
    rewrites: dict[str, str] = {}
    per_target: dict[str, Any] = {}
    # (target index, title): each target's original title, then every rewrite tried
    jobs = list(dict.fromkeys([(i, p[1]) for i, p in enumerate(plans)] +
                              [(i, opt.text) for i, p in enumerate(plans) for opt in p[3]]))
    measured = {(i, title): mean_rank(rec, title, plans[i][2], titles)
                for i, title in track(jobs, f"[{rec.name}] item-text search", "rewrite", enabled=progress)}
    for i, (target, original, queries, options) in enumerate(plans):
        base_rank, base_margin = measured[(i, original)]
        if not options:
            per_target[target] = {"original": original, "rewrite": original, "edits": 0,
                                  "search_rank_before": base_rank, "search_rank_after": base_rank,
                                  "tried": 0}
            continue
        tried = []
        for opt in options:
            rank, margin = measured[(i, opt.text)]
            tried.append((rank, -(margin if np.isfinite(margin) else 0.0), opt.edits, opt.text))
        best = min(tried)
        rewrites[original] = best[3]
        per_target[target] = {"original": original, "rewrite": best[3], "edits": best[2],
                              "search_rank_before": base_rank, "search_rank_after": best[0],
                              "search_margin_before": base_margin, "search_margin_after": -best[1],
                              "tried": len(tried), "queries": len(queries)}
    edits = [v["edits"] for v in per_target.values()]
    report = {"targets": per_target, "mean_edits": float(np.mean(edits)) if edits else 0.0,
              "max_edits": cfg.max_edits, "min_edits": cfg.min_edits, "operations": list(cfg.operations),
              "search": {"users": cfg.search_users, "candidates": cfg.search_candidates + 1,
                         "disjoint_from_audited": disjoint,
                         "by": "score" if rec.has("score") else "generate"}}
    return rewrites, report


class ItemTextAttackVariant(Variant):
    """Rewrite the target items' titles (edit budget, black-box search) at inference."""

    name: ClassVar[str] = "item-text"
    Config: ClassVar[type[StrictConfig]] = ItemTextAttackConfig
    trains: ClassVar[bool] = False

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        cfg: ItemTextAttackConfig = self.config  # type: ignore[assignment]
        if not (rec.has("score") or rec.has("generate")):
            raise ConfigError(f"variant 'item-text' needs a recommender with 'score' or 'generate'; "
                              f"{rec.name!r} has {sorted(rec.capabilities)}")
        if not rec.reads_item_text:
            raise ConfigError(f"variant 'item-text' rewrites item titles, but {rec.name!r} never reads them (each "
                              "item is a token of its own, e.g. hf with items: tokens); audit the attack on a model "
                              "that reads titles")
        return build_text_attack(rec, ctx.dataset, cfg, exclude=ctx.audit_users, progress=ctx.progress)


class CanonicalTitlesConfig(StrictConfig):
    """``threshold``: rapidfuzz similarity (0..100) for a title to count as a catalog title;
    ``scorer``: the rapidfuzz scorer; ``unmatched``: nearest (ground titles below the
    threshold to the nearest catalog title) | keep (leave them as written)."""

    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=100)
    scorer: str = DEFAULT_SCORER
    unmatched: Literal["nearest", "keep"] = "nearest"


class CanonicalTitlesVariant(Variant):
    """Ground every title to its canonical catalog text before the model sees it."""

    name: ClassVar[str] = "canonical-titles"
    Config: ClassVar[type[StrictConfig]] = CanonicalTitlesConfig
    trains: ClassVar[bool] = False

    def wrap(self, rec: Recommender, ctx: BuildContext) -> Recommender:
        cfg: CanonicalTitlesConfig = self.config  # type: ignore[assignment]
        if cfg.scorer not in SCORERS:
            raise ConfigError(f"variant 'canonical-titles': unknown scorer {cfg.scorer!r}; "
                              f"choose one of {', '.join(SCORERS)}")
        catalog = Catalog(ctx.dataset.item_titles, threshold=cfg.threshold, scorer=cfg.scorer)
        if isinstance(rec, AdaptiveAttack):  # the attacker searches again, through the defense
            defended = CanonicalTitlesRecommender(rec.inner, catalog, nearest=cfg.unmatched == "nearest")
            out: Recommender = rec.attack_again(defended, ctx)
        else:
            out = CanonicalTitlesRecommender(rec, catalog, nearest=cfg.unmatched == "nearest")
        out.info["canonical_titles_config"] = cfg.model_dump(mode="json")
        return out
