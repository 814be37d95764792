"""Log-probabilities of item sequences under a recommender: what membership scores and
canary perplexities are computed from.

A sequence (catalog item ids, oldest first, with a profile) is scored by one of three paths,
each meant to score it as the model was trained on it:

- ``answers`` (capability ``answer-logprobs``): the sequence's last ``answer_items`` items
  (default: the recommender's declared ``answer_items``, an ``hf`` LoRA's ``targets``, else 1)
  are the answer and the items before them the request's history, as in an instruction
  fine-tune's training window; the log-probabilities are those of the answer's tokens after the
  recommender's own prompt, where the fine-tune's loss is (the chosen default for ``hf``: a plain
  title list would score the fine-tune on text it never trained on);

- ``tokens`` (capability ``token_logprobs``): the sequence is rendered as *context* (the
  profile) and *body* (the items); the body's token log-probabilities are those of
  ``context + body`` beyond the tokens of ``context`` alone (so both share one
  tokenisation; contexts end at a token boundary in both formats below). Formats:

  * ``titles``: plain text for any language model, ``"<profile>\n"`` then one title per line
    (:func:`audit.interface.titles_sequence`);
  * the model's own format, where it declares one (``Recommender.sequence_format`` and
    :meth:`~audit.interface.Recommender.render_sequence`; the reference model writes
    ``<profile><hist><item_1><item_2>...``, one token per item, each predicted from the items
    before it, as in training).

  Min-K%++ also needs the mean and standard deviation of log p under the model's own
  next-token distribution: the ``token-stats`` capability
  (``token_logprob_stats(texts) -> list[(logp, mu, sigma)]``, arrays aligned with
  ``token_logprobs``), used only if its log-probabilities agree with the recommender's
  ``token_logprobs`` to 1e-4 (checked on the first batch of texts).
- ``items`` (capability ``score``): the log-likelihood the recommender gives item t as the
  next item after items 1..t-1 (one ``score`` call per position, ``max_positions`` last
  positions), for recommenders without token access. No Min-K%++ on this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from audit.interface import Recommender, RecRequest, titles_sequence

#: ``titles`` or a model's own declared format (``reference`` for the reference model)
TextFormat = str
STATS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ScoredSequence:
    """Per-token (or per-item) natural-log probabilities of one sequence's body, the body
    text (for the zlib ratio) and, when available, the per-position mean and standard
    deviation of log p under the model's next-token distribution."""

    logp: np.ndarray
    text: str
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None


def default_text_format(rec: Recommender) -> TextFormat:
    """The format the recommender declares (``Recommender.sequence_format``)."""
    return rec.sequence_format


def render(rec: Recommender, items: Sequence[str], profile: Mapping[str, str], titles: Mapping[str, str],
           fmt: TextFormat) -> tuple[str, str]:
    """(context, body) texts of a sequence of item ids: ``titles`` for any model, or the model's
    own format (``fmt`` equal to its declared ``sequence_format``, :meth:`Recommender.render_sequence`)."""
    if fmt == "titles":
        return titles_sequence(items, profile, titles)
    if fmt != rec.sequence_format:
        raise ValueError(f"text_format {fmt!r}: {rec.name} writes sequences as {rec.sequence_format!r}; "
                         f"use 'titles' or 'auto'")
    return rec.render_sequence(items, profile, titles)


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def score_by_tokens(rec: Recommender, sequences: Sequence[Sequence[str]], profiles: Sequence[Mapping[str, str]],
                    titles: Mapping[str, str], fmt: TextFormat, *, want_stats: bool = False,
                    batch_size: int = 64) -> tuple[list[ScoredSequence], str]:
    """Score through ``token_logprobs``; returns the scored sequences and a note on Min-K%++
    availability ('' when the statistics were computed)."""
    rendered = [render(rec, s, p, titles, fmt) for s, p in zip(sequences, profiles)]
    contexts = sorted({c for c, _ in rendered})
    ctx_len = {c: len(lp) for c, lp in zip(contexts, rec.token_logprobs(contexts))}
    fulls = [c + b for c, b in rendered]
    stats_fn = _stats_function(rec) if want_stats else None
    note = "" if stats_fn is not None or not want_stats else (
        f"{rec.name} offers neither token_logprob_stats nor a transformers model to compute them")
    out: list[ScoredSequence] = []
    verified = False
    for chunk in _chunks(len(fulls), batch_size):
        texts = [fulls[i] for i in chunk]
        if stats_fn is not None:
            triples = stats_fn(texts)
            lps = [t[0] for t in triples]
            if not verified:  # the statistics' own log-probs must be the recommender's
                reported = rec.token_logprobs(texts)
                if any(len(a) != len(b) or not np.allclose(a, b, atol=STATS_TOLERANCE, equal_nan=True)
                       for a, b in zip(lps, reported)):
                    stats_fn, note = None, "token statistics disagree with the recommender's token_logprobs"
                    lps, triples = reported, None
                verified = True
        else:
            lps, triples = rec.token_logprobs(texts), None
        for j, i in enumerate(chunk):
            start = ctx_len[rendered[i][0]]
            lp = np.asarray(lps[j], dtype=float)[start:]
            mu = sigma = None
            if triples is not None:
                mu = np.asarray(triples[j][1], dtype=float)[start:]
                sigma = np.asarray(triples[j][2], dtype=float)[start:]
            out.append(ScoredSequence(logp=lp, text=rendered[i][1], mu=mu, sigma=sigma))
    return out, note


def score_by_items(rec: Recommender, sequences: Sequence[Sequence[str]], profiles: Sequence[Mapping[str, str]],
                   titles: Mapping[str, str], *, max_positions: int = 20, batch_size: int = 64) -> list[ScoredSequence]:
    """Score through ``score``: log-likelihood of item t given items before it, for the last
    ``max_positions`` positions t >= 1 of each sequence."""
    reqs: list[RecRequest] = []
    owner: list[int] = []
    for n, (seq, prof) in enumerate(zip(sequences, profiles)):
        for t in range(max(1, len(seq) - max_positions), len(seq)):
            reqs.append(RecRequest(history=tuple(titles[i] for i in seq[:t]), profile=prof,
                                   candidates=(titles[seq[t]],)))
            owner.append(n)
    values = np.empty(len(reqs))
    for chunk in _chunks(len(reqs), batch_size):
        part = [reqs[i] for i in chunk]
        scores = rec.score(part, [r.candidates for r in part])
        values[list(chunk)] = [float(np.asarray(s, dtype=float)[0]) for s in scores]
    owner_arr = np.asarray(owner)
    return [ScoredSequence(logp=values[owner_arr == n], text="\n".join(titles[i] for i in seq))
            for n, seq in enumerate(sequences)]


def resolve_answer_items(rec: Recommender, answer_items: int | None) -> int:
    """``answer_items`` when given, else the recommender's declared ``answer_items``, else 1."""
    if answer_items is not None:
        return int(answer_items)
    return int(rec.answer_items) if rec.answer_items else 1


def score_by_answers(rec: Recommender, sequences: Sequence[Sequence[str]], profiles: Sequence[Mapping[str, str]],
                     titles: Mapping[str, str], answer_items: int, *, want_stats: bool = False,
                     batch_size: int = 64) -> list[ScoredSequence]:
    """Score through ``answer_logprobs``: each sequence's last ``answer_items`` items as the
    recommender's answer to the prompt of the items before them, cut as the LoRA examples cut
    their newest window (a one-item sequence is all answer; see the module docstring)."""
    from audit.training.data import answer_start

    reqs: list[RecRequest] = []
    answers: list[list[str]] = []
    for seq, prof in zip(sequences, profiles):
        cut = answer_start(len(seq), answer_items) if len(seq) >= 2 else 0
        reqs.append(RecRequest(history=tuple(titles[i] for i in seq[:cut]), profile=prof))
        answers.append([titles[i] for i in seq[cut:]])
    out: list[ScoredSequence] = []
    for chunk in _chunks(len(reqs), batch_size):
        triples = rec.answer_logprobs([reqs[i] for i in chunk], [answers[i] for i in chunk], stats=want_stats)
        for i, (lp, mu, sigma) in zip(chunk, triples):
            out.append(ScoredSequence(logp=np.asarray(lp, dtype=float), text="\n".join(answers[i]),
                                      mu=None if mu is None else np.asarray(mu, dtype=float),
                                      sigma=None if sigma is None else np.asarray(sigma, dtype=float)))
    return out


def _stats_function(rec: Recommender) -> Any:
    """The recommender's declared ``token-stats`` method, or None."""
    return rec.token_logprob_stats if rec.has("token-stats") else None


def score_sequences(rec: Recommender, sequences: Sequence[Sequence[str]], profiles: Sequence[Mapping[str, str]],
                    titles: Mapping[str, str], *, path: str = "auto", text_format: str = "auto",
                    want_stats: bool = False, max_positions: int = 20, batch_size: int = 64,
                    answer_items: int | None = None) -> tuple[list[ScoredSequence] | None, str, str]:
    """Score sequences by the best path the recommender supports.

    ``path``: auto | answers | tokens | items (auto: ``answers`` where declared, then ``tokens``,
    then ``items``); ``text_format``: auto | reference | titles (the ``tokens`` path);
    ``answer_items``: the ``answers`` path's answer length (None: :func:`resolve_answer_items`).
    Returns (scored sequences or None, a description of the path taken, a note on what is
    missing: why nothing was scored, or why Min-K%++ statistics are absent; '' when nothing is)."""
    chosen = path
    if chosen == "auto":
        chosen = ("answers" if rec.has("answer-logprobs") else "tokens" if rec.has("token-logprobs")
                  else "items" if rec.has("score") else "none")
    if chosen == "answers" and rec.has("answer-logprobs"):
        n = resolve_answer_items(rec, answer_items)
        scored = score_by_answers(rec, sequences, profiles, titles, n, want_stats=want_stats, batch_size=batch_size)
        return scored, f"answers (last {n} items as the answer to the recommender's own prompt)", ""
    if chosen == "tokens" and rec.has("token-logprobs"):
        fmt: TextFormat = default_text_format(rec) if text_format == "auto" else text_format  # type: ignore[assignment]
        scored, note = score_by_tokens(rec, sequences, profiles, titles, fmt, want_stats=want_stats,
                                       batch_size=batch_size)
        return scored, f"tokens ({fmt} format)", note
    if chosen == "items" and rec.has("score"):
        scored = score_by_items(rec, sequences, profiles, titles, max_positions=max_positions,
                                batch_size=batch_size)
        return scored, "items (score of each next item)", "per-item scores carry no token distribution"
    need = {"answers": "'answer-logprobs'", "tokens": "'token-logprobs'", "items": "'score'"}
    what = need.get(path, "any of 'answer-logprobs', 'token-logprobs' or 'score'")
    return None, "none", f"{rec.name} does not offer {what} (path {path!r})"
