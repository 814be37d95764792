"""How the ``hf`` recommender writes requests and answers in its model's tokens.

Prompts come from :mod:`audit.prompts` (a :class:`~audit.prompts.PromptSet`). With a chat
template the chat form (system + user messages) goes through
``tokenizer.apply_chat_template(..., add_generation_prompt=True)``; otherwise the
plain-completion form is the prompt. A plain prompt starts with the tokenizer's BOS token when
it has one and the tokenizer did not already add it (chat-templated prompts are left as the
template writes them). A prompt longer than the context (less the room reserved for generated
tokens and the soft prefix) is cut from the left: the oldest history goes.

An answer is a numbered list tokenised line by line (``"1."`` then ``" " + title``, lines joined
by ``"\\n"``) and closed by the end-of-turn token: what ``score`` scores a candidate as, and what
a LoRA example trains on.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Sequence

from audit.interface import RecRequest
from audit.llm.loading import first_not_none
from audit.prompts import Prompt, PromptSet


class Encoding:
    """Prompt text and token ids of requests, answers and titles for one tokenizer and
    :class:`~audit.prompts.PromptSet`; ``history``: the most recent history items a prompt shows;
    ``max_positions``: the model's context length (None: no cut)."""

    def __init__(self, tokenizer: Any, prompts: PromptSet, *, use_chat: bool, history: int,
                 max_positions: int | None) -> None:
        self.tokenizer, self.prompts = tokenizer, prompts
        self.use_chat, self.history, self.max_positions = use_chat, history, max_positions
        self.start_id = first_not_none(tokenizer.bos_token_id, tokenizer.eos_token_id)

    def with_prompts(self, prompts: PromptSet) -> "Encoding":
        """The same encoding with other templates."""
        other = copy.copy(self)
        other.prompts = prompts
        return other

    # -- prompts ------------------------------------------------------------------------------------
    def windowed(self, req: RecRequest) -> RecRequest:
        """``req`` with only the last ``history`` items of its history (the prompt's window)."""
        h = self.history
        return req if len(req.history) <= h else dataclasses.replace(req, history=req.history[-h:])

    def render(self, req: RecRequest, k: int, task: Any = None) -> Prompt:
        """The prompt for ``req`` (history windowed); ``task`` defaults to generate / rank."""
        req = self.windowed(req)
        return self.prompts.render(task or self.prompts.task_for(req), req, k)

    def text(self, prompt: Prompt) -> str:
        """The exact text the model reads: chat-templated messages, or the completion form."""
        if self.use_chat:
            return self.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False,
                                                      add_generation_prompt=True)
        return prompt.text

    def prompt_ids(self, text: str, reserve: int = 0, *, raw: bool = False, prefix_len: int = 0) -> list[int]:
        """Token ids of a prompt text, cut from the left to leave ``reserve`` positions (and the
        soft prefix's ``prefix_len``) free; ``raw`` text (``complete``) is never chat-templated."""
        templated = self.use_chat and not raw  # templated text already carries its special tokens
        ids = list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and not templated and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids and self.start_id is not None:
            ids = [self.start_id]
        limit = self.max_positions - reserve - prefix_len if self.max_positions else None
        if limit is not None and len(ids) > limit:
            ids = ids[len(ids) - max(limit, 1):]
        return list(ids)

    def request_ids(self, req: RecRequest, k: int, *, task: Any = None, reserve: int = 0,
                    prefix_len: int = 0) -> list[int]:
        """Token ids of the prompt for ``req`` (:meth:`render`, then :meth:`prompt_ids`)."""
        return self.prompt_ids(self.text(self.render(req, k, task)), reserve, prefix_len=prefix_len)

    # -- answers and titles -------------------------------------------------------------------------
    def plain_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def marker_ids(self, index: int) -> list[int]:
        """The list marker ``"<index>."`` of an answer's line."""
        return self.plain_ids(f"{index}.")

    def continuation_ids(self, title: str) -> list[int]:
        """A title as it follows a list marker (the prompt set's continuation template)."""
        return self.plain_ids(" " + self.prompts.continuation(title).lstrip())

    def answer_ids(self, titles: Sequence[str]) -> list[int]:
        """Token ids of a numbered answer list ending with the end-of-turn token."""
        out: list[int] = []
        for i, title in enumerate(titles, 1):
            if i > 1:
                out += self.plain_ids("\n")
            out += self.marker_ids(i) + self.continuation_ids(title)
        if self.tokenizer.eos_token_id is not None:
            out.append(int(self.tokenizer.eos_token_id))
        return out

    def text_ids(self, text: str) -> list[int]:
        """A raw text's ids after the start token (what ``token_logprobs`` and ``embed`` read)."""
        return ([] if self.start_id is None else [self.start_id]) + self.plain_ids(text)
