"""Plain Python recommenders of known memorisation behaviour, for the memorisation probes' tests.

Their "tokenizer" cuts a text after every newline (``"a\\nb"`` -> ``["a\\n", "b"]``), so a
context ending in a newline is always a token prefix of context + body, as the probes need.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from audit.interface import Generation, RecRequest, Recommender
from audit.probes.base import OutputRecorder, ProbeContext

TOKEN_RE = re.compile(r"[^\n]*\n|[^\n]+")


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def stable_noise(*parts: object, scale: float = 0.3) -> float:
    """Deterministic pseudo-noise in [-scale, scale] from the given parts."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return (int.from_bytes(digest[:4], "little") / 2**32 * 2 - 1) * scale


class LineModel(Recommender):
    """A 'language model' over lines (titles). It has memorised every line transition
    (previous line -> line) of the sequences it trained on: those get log-prob
    ``memorised``; everything else ``base``; plus seeded noise. ``trained_users`` is declared in
    ``info``. ``token_logprob_stats`` reports a fixed next-line distribution (mu, sigma)."""

    name = "line-model"
    capabilities = frozenset({"token-logprobs", "token-stats", "generate"})

    def __init__(self, dataset, trained_users: Iterable[str], *, memorised: float = -0.5,
                 base: float = -3.0, noise: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        self.dataset = dataset
        self.trained = sorted(set(trained_users))
        self.info["trained_users"] = list(self.trained)
        titles = dataset.item_titles
        self.memory: set[tuple[str, str]] = set()
        for u in self.trained:
            seq = [titles[i] for i in dataset.sequences[u].train]
            self.memory.update(zip(seq, seq[1:]))
        self.memorised, self.base, self.noise, self.seed = memorised, base, noise, seed

    def _line_logps(self, text: str) -> np.ndarray:
        toks = [t.rstrip("\n") for t in tokens(text)]
        out = []
        for j, tok in enumerate(toks):
            prev = toks[j - 1] if j else "<start>"
            level = self.memorised if (prev, tok) in self.memory else self.base
            out.append(level + stable_noise(self.seed, text[:200], j, scale=self.noise))
        return np.array(out)

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self._line_logps(t) for t in texts]

    def token_logprob_stats(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for t in texts:
            lp = self._line_logps(t)
            out.append((lp, np.full(lp.size, -2.5), np.full(lp.size, 1.0)))
        return out

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        """Zhang et al.'s setting: a history the model trained on gets items recited from that
        user's own sequence (its last items, newest first); any other history gets the most
        popular items."""
        popular = sorted(self.dataset.item_popularity, key=lambda i: -self.dataset.item_popularity[i])
        titles = self.dataset.item_titles
        out = []
        for r in reqs:
            if all((a, b) in self.memory for a, b in zip(r.history, r.history[1:])) and len(r.history) > 1:
                out.append(list(r.history[::-1][:k]))
            else:
                out.append([titles[i] for i in popular[:k]])
        return out


class NoiseModel(Recommender):
    """Token log-probs are seeded noise that ignores training entirely (the null model)."""

    name = "noise-model"
    capabilities = frozenset({"token-logprobs"})

    def __init__(self, trained_users: Iterable[str], seed: int = 0) -> None:
        super().__init__()
        self.info["trained_users"] = sorted(set(trained_users))
        self.seed = seed

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array([-2.0 + stable_noise(self.seed, t, j, scale=1.5) for j, _ in enumerate(tokens(t))])
                for t in texts]


def probe_context(dataset, users: Sequence[str] | None = None, seed: int = 0, name: str = "test") -> ProbeContext:
    return ProbeContext(dataset=dataset, users=list(users or dataset.evaluable_users()), seed=seed,
                        recorder=OutputRecorder(recommender=name, probe="test"))


def halves(dataset) -> tuple[list[str], list[str]]:
    users = dataset.user_ids()
    return users[: len(users) // 2], users[len(users) // 2:]


def titles_of(dataset, ids: Sequence[str]) -> list[str]:
    return [dataset.item_titles[i] for i in ids]


def profile_of(dataset, user: str) -> Mapping[str, str]:
    return dataset.user_profiles.get(user, {})


def canary_manifest(dataset, **options) -> dict:
    """A reference-style ``manifest.json`` whose one stage carries the canary transform's manifest."""
    from audit.memorisation.canaries import CanaryTransform

    transform = CanaryTransform(**options)
    seqs = {u: list(dataset.sequences[u].train) for u in dataset.user_ids()}
    profiles = {u: dict(dataset.user_profiles.get(u, {})) for u in seqs}
    new_seqs, _, manifest = transform.apply(seqs, profiles, dataset, np.random.default_rng(0))
    return {"stages": [{"name": "full", "users": sorted(new_seqs),
                        "transforms": [{**transform.to_json(), "manifest": manifest}]}]}


class SequenceMemoryModel(Recommender):
    """Token log-probs of a text rise with how often its exact body was trained on:
    ``base + strength * log2(1 + copies) + noise`` per line, where ``copies`` counts the
    training users (canaries included) with that sequence. ``strength = 0`` is a null model."""

    name = "sequence-memory"
    capabilities = frozenset({"token-logprobs"})

    def __init__(self, dataset, manifest: dict, *, strength: float = 1.0, base: float = -3.0,
                 noise: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.info["manifest"] = manifest
        titles = dataset.item_titles
        self.copies: dict[str, int] = {}
        for c in manifest["stages"][0]["transforms"][0]["manifest"]["exposure"]:
            self.copies["\n".join(titles[i] for i in c["items"])] = int(c["repetitions"])
        for c in manifest["stages"][0]["transforms"][0]["manifest"]["audit"]:
            if c["included"]:
                self.copies["\n".join(titles[i] for i in c["items"])] = 1
        self.strength, self.base, self.noise, self.seed = strength, base, noise, seed

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            toks = tokens(text)
            body = "".join(toks[1:])
            level = self.base + self.strength * np.log2(1 + self.copies.get(body, 0))
            out.append(np.array([level + stable_noise(self.seed, text, j, scale=self.noise)
                                 for j in range(len(toks))]))
        return out


class RecitingModel(Recommender):
    """Completes the sequences it trained on: a prompt whose lines are the start of a trained
    user's sequence is continued with that user's next titles (``typo`` doubles each title's
    first letter, so only fuzzy matching recognises them); other prompts get ``fallback``.
    ``ID::Title`` prompts are answered for the items in ``known_ids``. ``generate`` recites the
    same continuation from a request's history."""

    name = "reciting-model"
    capabilities = frozenset({"complete", "generate"})

    def __init__(self, dataset, trained_users: Iterable[str], *, known_ids: Iterable[str] = (),
                 typo: bool = False) -> None:
        super().__init__()
        self.dataset = dataset
        self.info["trained_users"] = sorted(set(trained_users))
        titles = dataset.item_titles
        self.sequences = [[titles[i] for i in dataset.sequences[u].train] for u in self.info["trained_users"]]
        self.known = {str(i): titles[str(i)] for i in known_ids}
        self.typo = typo
        self.fallback = [titles[i] for i in list(titles)[:5]]

    def _continue(self, lines: list[str], m: int) -> list[str]:
        for seq in self.sequences:
            if seq[: len(lines)] == lines:
                out = seq[len(lines): len(lines) + m]
                return [t[0] + t for t in out] if self.typo else out
        return self.fallback[:m]

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        out = []
        for p in prompts:
            last = p.rstrip("\n").split("\n")[-1]
            if "::" in last and last.endswith("::"):
                out.append(" " + self.known.get(last[:-2], "I do not know") + "\n")
                continue
            lines = [x for x in p.split("\n")[1:] if x]
            out.append("\n".join(self._continue(lines, 3)) + "\n")
        return out

    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [self._continue(list(r.history), k) for r in reqs]


class ScoringLineModel(LineModel):
    """The same memory behind ``score`` only (no token access): a candidate that follows the
    request's last history item in a trained sequence gets ``memorised``, others ``base``."""

    name = "scoring-line-model"
    capabilities = frozenset({"score"})

    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        out = []
        for r, cands in zip(reqs, items):
            prev = r.history[-1] if r.history else "<start>"
            out.append(np.array([(self.memorised if (prev, c) in self.memory else self.base)
                                 + stable_noise(self.seed, r.history, c, scale=self.noise) for c in cands]))
        return out


class AnswerMemoryModel(Recommender):
    """An instruction fine-tune of known behaviour (capability ``answer-logprobs``): it trained on
    windows of ``history`` items followed by an answer of ``answer_items`` items, and the log-prob
    of each answer title (one 'token' per title) is ``base + strength * log2(1 + copies)`` plus
    seeded noise, where ``copies`` counts how often that exact window (history tail, answer) was
    trained on. Windows: each trained user's newest one (``trained_users``) and, with
    ``manifest``, every canary's (with its repetitions). Its ``token_logprobs`` of any text are
    noise: on a rendered title list it shows nothing, as a fine-tune scored out of its format.
    ``answer_items=None`` (with no windows) stands for the untuned base. Every answer length it
    was asked to score is kept in ``asked``."""

    name = "answer-memory"
    capabilities = frozenset({"answer-logprobs", "token-logprobs"})

    def __init__(self, dataset, trained_users: Iterable[str] = (), *, manifest: dict | None = None,
                 answer_items: int | None = 3, history: int = 5, strength: float = 1.0,
                 base: float = -3.0, noise: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        titles = dataset.item_titles
        self.answer_items, self.history = answer_items, history
        self.copies: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        n = answer_items or 1
        windows = [list(dataset.sequences[u].train) for u in sorted(set(trained_users))]
        if trained_users:
            self.info["trained_users"] = sorted(set(trained_users))
        if manifest is not None:
            self.info["manifest"] = manifest
            found = manifest["stages"][0]["transforms"][0]["manifest"]
            for c in found["exposure"]:
                windows += [list(c["items"])] * int(c["repetitions"])
            windows += [list(c["items"]) for c in found["audit"] if c["included"]]
        for seq in windows:
            key = self._key([titles[i] for i in seq[-n - history:-n]], [titles[i] for i in seq[-n:]])
            self.copies[key] = self.copies.get(key, 0) + 1
        self.strength, self.base, self.noise, self.seed = strength, base, noise, seed
        self.asked: list[int] = []

    def _key(self, history: Sequence[str], answer: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(history)[-self.history:], tuple(answer)

    def answer_logprobs(self, reqs: Sequence[RecRequest], answers: Sequence[Sequence[str]], *,
                        stats: bool = False) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        out = []
        for req, answer in zip(reqs, answers):
            self.asked.append(len(answer))
            copies = self.copies.get(self._key(req.history, answer), 0)
            level = self.base + self.strength * np.log2(1 + copies)
            lp = np.array([level + stable_noise(self.seed, req.history, answer, j, scale=self.noise)
                           for j in range(len(answer))])
            out.append((lp, np.full(lp.size, -2.5), np.full(lp.size, 1.0)) if stats else (lp, None, None))
        return out

    def token_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.array([-3.0 + stable_noise(self.seed, "text", t, j, scale=self.noise) for j, _ in enumerate(tokens(t))])
                for t in texts]


class AnswerRecitingModel(Recommender):
    """An instruction fine-tune that recites the answers it trained on (capability
    ``answer-generate``): it trained on each of ``trained_users``' newest window (the last
    ``history`` items before the last ``answer_items``, then those as the answer), and answers a
    request whose history ends with a trained window's history with that window's answer; any other
    request gets the catalog's first titles (every request, with ``memorised=False``: trained on
    them, recites none). Its ``complete`` continues no sequence (it never trained
    on plain title lists), so extraction from the oldest items finds nothing."""

    name = "answer-reciting"
    capabilities = frozenset({"answer-generate", "complete"})

    def __init__(self, dataset, trained_users: Iterable[str], *, answer_items: int = 3, history: int = 5,
                 memorised: bool = True) -> None:
        super().__init__()
        titles = dataset.item_titles
        self.answer_items, self.history = answer_items, history
        self.info["trained_users"] = sorted(set(trained_users))
        self.answers: dict[tuple[str, ...], list[str]] = {}
        for u in self.info["trained_users"] if memorised else ():
            seq = [titles[i] for i in dataset.sequences[u].train]
            cut = max(1, len(seq) - answer_items)
            self.answers[tuple(seq[:cut][-history:])] = seq[cut:]
        self.fallback = [titles[i] for i in list(titles)[:answer_items]]
        self.asked: list[int] = []

    def answer_generate(self, reqs: Sequence[RecRequest], max_items: int) -> list[Generation]:
        out = []
        for r in reqs:
            self.asked.append(max_items)
            items = self.answers.get(tuple(r.history)[-self.history:], self.fallback)[:max_items]
            out.append(Generation(prompt=f"recommend after {len(r.history)} items", raw="\n".join(items),
                                  items=tuple(items)))
        return out

    def complete(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        return ["\n".join(self.fallback) + "\n" for _ in prompts]
