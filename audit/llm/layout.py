"""The ``hf`` model's constrained-decoding layout: plain-text lists in its tokenizer (a
``ConstraintLayout`` of :mod:`audit.decoding.constrained`, satisfied structurally)."""

from __future__ import annotations

from typing import Any, Literal

from audit.errors import ConfigError
from audit.list_format import ListFormat


class TextLayout:
    """Plain-text lists for any tokenizer: ``numbered`` ("1. Title\\n2. Title") or ``lines``."""

    def __init__(self, tokenizer: Any, style: Literal["numbered", "lines"] = "numbered") -> None:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("constrained decoding needs a tokenizer with an end-of-sequence token "
                              "(the list must be able to end)")
        self.tokenizer = tokenizer
        self.style = style
        self.eos = int(eos)
        pad = tokenizer.pad_token_id
        # after the end only padding (when it differs from eos): a finished beam that is kept
        # running must not end a second time
        self.stop = (self.eos,) if pad is None else (int(pad),)
        self.separator = self._encode("\n")
        self._formats: dict[int, ListFormat] = {}

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def item_tokens(self, title: str, item_id: str | None = None) -> tuple[int, ...]:
        return self._encode((" " if self.style == "numbered" else "") + title.strip())

    def slots(self, k: int) -> int:
        return k

    def list_format(self, k: int) -> ListFormat:
        fmt = self._formats.get(k)
        if fmt is None:
            leads = tuple(self._encode(f"{i}.") for i in range(1, k + 1)) if self.style == "numbered" else ()
            fmt = ListFormat(separator=self.separator, end=(self.eos,), leads=leads, stop=self.stop)
            self._formats[k] = fmt
        return fmt
