"""Prompt templates as data: rendering a :class:`RecRequest` into chat or plain prompts, and back.

The templates live in ``audit/prompts/default.yaml`` (read that file for the fields each
template may use). Three tasks: ``generate`` (open list of K items), ``rank`` (the best K of
the request's candidates) and ``yesno`` (would the user like one item). Each task has a chat
form (system + user messages) and a plain-completion form.

Overriding per suite (an adapter's ``prompts:`` option, see :func:`load_prompt_set`):

- a YAML file path (relative paths resolve against the suite's directory, then the cwd);
- inline strings, e.g. ``{generate: {user: "..."}}``;
- both: ``{file: my_prompts.yaml, rank: {completion: "..."}}``.

Overrides merge key by key over the defaults. A template that names a field it cannot
have, or that is not a valid format string, raises :class:`ConfigError` at load.

:meth:`PromptSet.parse` inverts rendering: it recovers the request, ``k`` and the asked
item from a rendered prompt (used by :mod:`audit.serve` for plain OpenAI clients).
Inversion is exact for requests whose titles contain no line breaks and whose attribute
values do not contain the profile separator.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from audit.config import StrictConfig, validate_config
from audit.errors import ConfigError
from audit.interface import RecRequest

Task = Literal["generate", "rank", "yesno"]
Form = Literal["chat", "completion"]
TASKS: tuple[Task, ...] = ("generate", "rank", "yesno")

_COMMON_FIELDS = frozenset({"profile", "history", "history_inline", "n_history", "k"})
TASK_FIELDS: dict[str, frozenset[str]] = {
    "generate": _COMMON_FIELDS,
    "rank": _COMMON_FIELDS | {"candidates", "n_candidates"},
    "yesno": _COMMON_FIELDS | {"item"},
}
_NUMERIC_FIELDS = frozenset({"k", "n_history", "n_candidates", "index"})


class ProfileFormat(StrictConfig):
    """How a non-empty profile is written: ``intro`` around the joined attributes."""

    intro: str
    attribute: str
    separator: str


class TaskTemplate(StrictConfig):
    """One task's templates: chat ``system`` + ``user`` messages, and plain ``completion``."""

    system: str
    user: str
    completion: str


class PromptSetConfig(StrictConfig):
    vars: dict[str, str] = {}
    profile: ProfileFormat
    history_item: str
    candidate_item: str
    empty_history: str
    continuation: str
    generate: TaskTemplate
    rank: TaskTemplate
    yesno: TaskTemplate


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt in both forms. ``messages`` is the chat form (system, user)."""

    task: str
    messages: tuple[dict[str, str], ...]
    text: str

    def chat_text(self) -> str:
        """The chat messages as one readable string (for logs and reports)."""
        return format_messages(self.messages)


@dataclass(frozen=True)
class ParsedPrompt:
    """What :meth:`PromptSet.parse` recovered from a rendered prompt."""

    task: str
    request: RecRequest
    k: int
    item: str | None = None


def format_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """``[system]\\n...\\n\\n[user]\\n...``: chat messages as one string."""
    return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in messages)


def _fields(template: str, where: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"prompt template {where}: not a valid format string ({exc}); "
                          "write literal braces as {{ and }}") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise ConfigError(f"prompt template {where}: field {{{name}}} must be a plain name "
                              "(no indexing, attributes, conversions or format specs)")
        names.append(name)
    return names


class _Blank(dict):
    """Format values where a field not given (e.g. ``{n_history}`` before the history) is ""."""

    def __missing__(self, key: str) -> str:
        return ""


class PromptSet:
    """Validated templates; renders requests (:meth:`render`) and inverts prompts (:meth:`parse`)."""

    def __init__(self, config: PromptSetConfig) -> None:
        self.config = config
        self.vars = dict(config.vars)
        reserved = set().union(*TASK_FIELDS.values()) | {"attributes", "name", "value", "index", "title"}
        clash = set(self.vars) & reserved
        if clash:
            raise ConfigError(f"prompt vars {sorted(clash)} shadow built-in fields; rename them")
        self._check("profile.intro", config.profile.intro, {"attributes"})
        self._check("profile.attribute", config.profile.attribute, {"name", "value"})
        self._check("history_item", config.history_item, {"index", "title"})
        self._check("candidate_item", config.candidate_item, {"index", "title"})
        self._check("continuation", config.continuation, {"title"})
        for task in TASKS:
            tpl: TaskTemplate = getattr(config, task)
            for form in ("system", "user", "completion"):
                self._check(f"{task}.{form}", getattr(tpl, form), TASK_FIELDS[task])
        self._regex_cache: dict[str, re.Pattern[str]] = {}

    def _check(self, where: str, template: str, allowed: set[str] | frozenset[str]) -> None:
        allowed_all = set(allowed) | set(self.vars)
        unknown = [n for n in _fields(template, where) if n not in allowed_all]
        if unknown:
            raise ConfigError(
                f"prompt template {where}: unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                f"allowed here: {', '.join('{' + a + '}' for a in sorted(allowed_all))}")

    # -- rendering -------------------------------------------------------------------------------
    def profile_text(self, profile: Mapping[str, str]) -> str:
        """The profile sentence, or "" for an empty profile."""
        if not profile:
            return ""
        p = self.config.profile
        attrs = p.separator.join(p.attribute.format(name=n, value=v) for n, v in profile.items())
        return p.intro.format(attributes=attrs)

    def _list(self, template: str, titles: Sequence[str]) -> str:
        return "\n".join(template.format(index=i, title=t) for i, t in enumerate(titles, 1))

    def fields(self, req: RecRequest, k: int, item: str | None = None) -> dict[str, Any]:
        """The values of every field for one request."""
        history = self._list(self.config.history_item, req.history) or self.config.empty_history
        return {**self.vars, "profile": self.profile_text(req.profile), "history": history,
                "history_inline": "; ".join(req.history), "n_history": len(req.history), "k": int(k),
                "candidates": self._list(self.config.candidate_item, req.candidates),
                "n_candidates": len(req.candidates), "item": item if item is not None else ""}

    def render(self, task: Task, req: RecRequest, k: int, item: str | None = None) -> Prompt:
        """Render ``task`` for one request in both forms."""
        if task not in TASK_FIELDS:
            raise ConfigError(f"unknown prompt task {task!r}; choose one of {', '.join(TASKS)}")
        tpl: TaskTemplate = getattr(self.config, task)
        values = self.fields(req, k, item)
        messages = ({"role": "system", "content": tpl.system.format(**values)},
                    {"role": "user", "content": tpl.user.format(**values)})
        return Prompt(task=task, messages=messages, text=tpl.completion.format(**values))

    def task_for(self, req: RecRequest) -> Task:
        """``rank`` when the request has candidates, else ``generate``."""
        return "rank" if req.candidates else "generate"

    def before_history(self, profile: Mapping[str, str], task: Task = "generate") -> str:
        """The plain-completion form of ``task`` up to its ``{history}`` field (instruction and
        profile text; what an item-token model reads before the history's item tokens).
        ConfigError when that template has no ``{history}``."""
        template = getattr(self.config, task).completion
        if "history" not in _fields(template, f"{task}.completion"):
            raise ConfigError(f"prompt template {task}.completion has no {{history}} field; an item-token "
                              "model needs one (its history's item tokens go there)")
        cut = template.split("{history}", 1)[0]
        values = {**self.vars, "profile": self.profile_text(profile)}
        return string.Formatter().vformat(cut, (), _Blank(values))

    def continuation(self, title: str) -> str:
        """The text whose likelihood scores ``title`` (after the generate prompt)."""
        return self.config.continuation.format(**self.vars, title=title)

    # -- inversion -------------------------------------------------------------------------------
    def _regex(self, template: str) -> re.Pattern[str]:
        if template not in self._regex_cache:
            parts, seen = [], set()
            for literal, name, _, _ in string.Formatter().parse(template):
                parts.append(re.escape(literal))
                if name is None:
                    continue
                if name in self.vars:
                    parts.append(re.escape(self.vars[name]))
                elif name in seen:
                    parts.append(f"(?P={name})")
                else:
                    seen.add(name)
                    parts.append(rf"(?P<{name}>\d+)" if name in _NUMERIC_FIELDS else rf"(?P<{name}>.*?)")
            self._regex_cache[template] = re.compile(r"\A" + "".join(parts) + r"\Z", re.DOTALL)
        return self._regex_cache[template]

    def _unlist(self, template: str, text: str) -> tuple[str, ...] | None:
        if not text:
            return ()
        rx = self._regex(template)
        out = []
        for line in text.split("\n"):
            m = rx.match(line)
            if not m:
                return None
            out.append(m.group("title") if "title" in rx.groupindex else line)
        return tuple(out)

    def _unprofile(self, text: str) -> dict[str, str] | None:
        if not text:
            return {}
        p = self.config.profile
        m = self._regex(p.intro).match(text)
        if not m:
            return None
        rx = self._regex(p.attribute)
        out: dict[str, str] = {}
        for part in m.group("attributes").split(p.separator):
            am = rx.match(part)
            if not am:
                return None
            out[am.group("name")] = am.group("value")
        return out

    def parse(self, text: str, form: Form = "chat") -> ParsedPrompt | None:
        """Recover (task, request, k, item) from a rendered user message (``form='chat'``) or
        completion prompt; None when no template matches."""
        for task in ("rank", "yesno", "generate"):
            tpl: TaskTemplate = getattr(self.config, task)
            m = self._regex(tpl.user if form == "chat" else tpl.completion).match(text)
            if not m:
                continue
            groups = m.groupdict()
            profile = self._unprofile(groups.get("profile") or "")
            hist_text = groups.get("history", "")
            history = (() if hist_text == self.config.empty_history
                       else self._unlist(self.config.history_item, hist_text or ""))
            candidates = self._unlist(self.config.candidate_item, groups.get("candidates") or "")
            if profile is None or history is None or candidates is None:
                continue
            k = int(groups["k"]) if groups.get("k") else (len(candidates) or 1)
            req = RecRequest(history=history, profile=profile, candidates=candidates)
            return ParsedPrompt(task=task, request=req, k=k, item=groups.get("item"))
        return None


# -- loading ------------------------------------------------------------------------------------
def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt file {path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt file {path}: expected a mapping of templates, got {type(data).__name__}")
    return data


def default_prompt_data() -> dict[str, Any]:
    """The packaged default templates as plain data."""
    text = resources.files("audit").joinpath("prompts/default.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        tried = [p]
    else:
        tried = ([base_dir / p] if base_dir is not None else []) + [Path.cwd() / p]
    for cand in tried:
        if cand.is_file():
            return cand
    raise ConfigError(f"prompt file {str(path)!r} not found (looked in: {', '.join(str(t) for t in tried)})")


def load_prompt_set(spec: str | Path | Mapping[str, Any] | None = None,
                    base_dir: Path | None = None) -> PromptSet:
    """Templates from the defaults, a YAML file, inline overrides, or ``{file: ..., **overrides}``.

    Raises ConfigError for unknown keys, unknown placeholders and missing files."""
    data = default_prompt_data()
    where = "prompts"
    if spec is None:
        pass
    elif isinstance(spec, (str, Path)):
        path = _resolve(spec, base_dir)
        data = _deep_merge(data, _read_yaml(path))
        where = f"prompts ({path})"
    elif isinstance(spec, Mapping):
        over = dict(spec)
        file = over.pop("file", None)
        if file is not None:
            path = _resolve(file, base_dir)
            data = _deep_merge(data, _read_yaml(path))
            where = f"prompts ({path})"
        data = _deep_merge(data, over)
    else:
        raise ConfigError(f"prompts: expected a file path or a mapping of templates, got {spec!r}")
    return PromptSet(validate_config(PromptSetConfig, data, where))


_DEFAULT: PromptSet | None = None


def default_prompts() -> PromptSet:
    """The packaged defaults (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_prompt_set(None)
    return _DEFAULT
