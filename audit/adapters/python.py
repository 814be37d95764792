"""The ``python`` adapter: audit a plain Python function as a recommender.

Suite entry::

    mine: {adapter: python, generate: "mypkg.recs:generate", score: "mypkg.recs:score",
           options: {alpha: 0.5}}

- ``generate: "module:function"`` is called as ``generate(requests: list[RecRequest], k: int,
  **options) -> list[list[str]]`` (best first). ``score`` (optional) as ``score(requests,
  items: list[list[str]], **options) -> list[array-like]``. At least one of them is needed;
  the recommender's capabilities are those given. The attribute part may be dotted
  (``module:Class.method``); the module part may be a ``.py`` file path (``recs.py:generate``).
- Where modules are found: the suite file's directory (``BuildContext.suite_dir``, when the
  runner sets it) and then the current working directory are put at the front of
  ``sys.path`` (once, and left there so the module's own later imports keep working).
  So ``mypkg.recs:generate`` resolves to ``<suite dir>/mypkg/recs.py`` or ``./mypkg/recs.py``.
- ``options`` are passed as keyword arguments; each must be accepted by the function
  (a named parameter or ``**kwargs``), else ConfigError. So is a missing module, a missing
  attribute, a non-callable, or a signature that cannot take ``(requests, k)``.

Output contracts (checked on every call; a violation is an :class:`~audit.errors.OutputContractError`,
a runtime error (exit 3) naming the callable and what it returned, never a silent repair):

- ``generate`` returns a list (or tuple) with one list of strings per request, in request order;
  anything else (a string, a number, the wrong number of lists, a non-string entry) is an error;
  a list longer than ``k`` is cut to ``k`` and counted in ``info["truncated_lists"]``
  (``Generation.raw`` keeps the full returned list as JSON);
- ``score`` returns one 1-D array-like of numbers per candidate list, each as long as its list.

A generation's ``prompt`` is the request as JSON (``history_id``, ``profile``, ``candidates``,
``user``): the callable reads the request, not a text. The history is named by its content address
(:attr:`RecRequest.history_id`); ``outputs.jsonl`` holds the titles once, on the first call record
with that id (its ``history``), instead of once per call.

Exceptions raised inside the user's function propagate: the runner reports the job as an
error with the message.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from audit.config import StrictConfig, short
from audit.errors import ConfigError, OutputContractError
from audit.interface import Adapter, Generation, RecRequest
from audit.variants import BuildContext

#: one shared encoder: building a JSONEncoder per call costs more than encoding a short list
_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False)

GenerateFn = Callable[..., Any]
ScoreFn = Callable[..., Any]


class PythonConfig(StrictConfig):
    """``generate``: ``"module:function"`` called as ``generate(requests, k, **options)``, one list of titles
    (best first) per request; ``score``: ``"module:function"`` called as ``score(requests, items, **options)``,
    one score per candidate (higher = better); give at least one of the two; ``options``: keyword arguments
    passed to both."""

    generate: str | None = None
    score: str | None = None
    options: dict[str, Any] = {}


def search_dirs(ctx: BuildContext | None) -> list[Path]:
    """Directories a ``module:function`` target is looked up in, in order (each once)."""
    return dirs_for(ctx.suite_dir if ctx is not None else None)


def dirs_for(suite_dir: Path | str | None) -> list[Path]:
    """The suite file's directory (when given), then the working directory, without repeats."""
    dirs = [Path(suite_dir).resolve()] if suite_dir is not None else []
    return list(dict.fromkeys([*dirs, Path.cwd().resolve()]))


def resolve_target(target: str, dirs: Sequence[Path] = (), role: str = "target") -> Callable[..., Any]:
    """Import ``"module:attr.path"`` (module may be a ``.py`` path) and return the callable."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"python adapter {role} {target!r}: expected 'module:function'")
    for d in reversed(list(dirs)):
        if str(d) not in sys.path:
            sys.path.insert(0, str(d))
    try:
        if module_name.endswith(".py"):
            module = _import_file(module_name, dirs, role, target)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and not (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(f"python adapter {role} {target!r}: importing {module_name!r} raised "
                              f"{type(exc).__name__}: {exc} (a module it imports is missing)") from None
        searched = ", ".join(str(d) for d in dict.fromkeys(dirs))
        raise ConfigError(f"python adapter {role} {target!r}: cannot import module {module_name!r} "
                          f"({exc}); searched {searched + ' and ' if searched else ''}sys.path") from None
    except Exception as exc:  # noqa: BLE001 - user module failed while importing
        raise ConfigError(f"python adapter {role} {target!r}: importing {module_name!r} raised "
                          f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"python adapter {role} {target!r}: module {module_name!r} has no "
                              f"attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"python adapter {role} {target!r}: {attr!r} is a "
                          f"{type(obj).__name__}, not a function")
    return obj


def _import_file(name: str, dirs: Sequence[Path], role: str, target: str) -> Any:
    path = Path(name)
    tried = [path] if path.is_absolute() else [d / path for d in dirs]
    for cand in tried:
        if cand.is_file():
            mod_name = f"recaudit_user_{abs(hash(str(cand.resolve())))}"
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, cand)
            if spec is None or spec.loader is None:
                raise ConfigError(f"python adapter {role} {target!r}: {cand} is not an importable "
                                  "Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            return module
    raise ConfigError(f"python adapter {role} {target!r}: file {name!r} not found "
                      f"(looked in: {', '.join(str(t) for t in tried)})")


def check_signature(fn: Callable[..., Any], n_positional: int, options: dict[str, Any],
                    role: str, target: str) -> None:
    """ConfigError unless ``fn`` accepts ``n_positional`` positional args plus ``options``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    params = list(sig.parameters.values())
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    not_accepted = [o for o in options if o not in named and not takes_kwargs]
    if not_accepted:
        raise ConfigError(f"python adapter {role} {target!r}: option(s) {', '.join(not_accepted)} "
                          f"are not parameters of {fn.__name__}{sig}")
    try:
        sig.bind(*([None] * n_positional), **options)
    except TypeError as exc:
        expected = "(requests, k)" if role == "generate" else "(requests, items)"
        raise ConfigError(f"python adapter {role} {target!r}: {fn.__name__}{sig} cannot be called as "
                          f"{role}{expected} ({exc})") from None


class PythonAdapter(Adapter):
    """A recommender backed by plain Python functions (see the module docstring)."""

    Config: ClassVar[type[StrictConfig]] = PythonConfig
    #: what an instance may have; each instance declares only what it was given
    capabilities: frozenset[str] = frozenset({"generate", "score"})
    kind: ClassVar[str] = "python"

    def __init__(self, generate: GenerateFn | None = None, score: ScoreFn | None = None, *,
                 options: dict[str, Any] | None = None, name: str = "python",
                 targets: dict[str, str] | None = None) -> None:
        super().__init__()
        if generate is None and score is None:
            raise ConfigError("python adapter: give 'generate' and/or 'score' (as 'module:function')")
        self.name = name
        self._generate = generate
        self._score = score
        self.options = dict(options or {})
        targets = targets or {}
        for role, fn in (("generate", generate), ("score", score)):
            if fn is not None:
                check_signature(fn, 2, self.options, role, targets.get(role, getattr(fn, "__name__", role)))
        self.capabilities = frozenset(c for c, fn in (("generate", generate), ("score", score))
                                      if fn is not None)
        self.info.update({"targets": dict(targets), "truncated_lists": 0})
        self._targets = {role: targets.get(role, getattr(fn, "__qualname__", role))
                         for role, fn in (("generate", generate), ("score", score)) if fn is not None}

    @classmethod
    def check(cls, config: PythonConfig, suite_dir: Path | None = None) -> None:
        """Import the targets at load time: a missing module, attribute or file, a module whose own
        import fails, or a signature that cannot take ``(requests, k)`` is a ConfigError (exit 2)."""
        if config.generate is None and config.score is None:
            raise ConfigError("python adapter: give 'generate' and/or 'score' (as 'module:function')")
        dirs = dirs_for(suite_dir)
        for role, target in (("generate", config.generate), ("score", config.score)):
            if target:
                check_signature(resolve_target(target, dirs, role), 2, dict(config.options), role, target)

    @classmethod
    def build(cls, config: PythonConfig, ctx: BuildContext | None = None,
              training_variants: Sequence[Any] = ()) -> "PythonAdapter":
        """Resolve the configured targets (see the module docstring for where they are found)."""
        if config.generate is None and config.score is None:
            raise ConfigError("python adapter: give 'generate' and/or 'score' (as 'module:function')")
        dirs = search_dirs(ctx)
        gen = resolve_target(config.generate, dirs, "generate") if config.generate else None
        sc = resolve_target(config.score, dirs, "score") if config.score else None
        targets = {r: t for r, t in (("generate", config.generate), ("score", config.score)) if t}
        return cls(gen, sc, options=dict(config.options), targets=targets)

    # -- generate ----------------------------------------------------------------------------
    def generate(self, reqs: Sequence[RecRequest], k: int) -> list[list[str]]:
        return [list(g.items) for g in self.generate_detailed(reqs, k)]

    def generate_detailed(self, reqs: Sequence[RecRequest], k: int) -> list[Generation]:
        if self._generate is None:
            raise self._missing("generate")
        reqs = list(reqs)
        lists = self._checked_lists(self._generate(reqs, k, **self.options), len(reqs))
        out = []
        encode = _JSON.encode
        for req, items in zip(reqs, lists):
            if len(items) > k:
                self.info["truncated_lists"] += 1
            prompt = encode({"history_id": req.history_id, "profile": dict(req.profile),
                             "candidates": req.candidates, "user": req.user})
            out.append(Generation(prompt=prompt, raw=encode(items), items=tuple(items[: max(k, 0)])))
        return out

    def _violation(self, role: str, what: str, result: Any, expected: str) -> OutputContractError:
        return OutputContractError(f"python adapter {role} {self._targets.get(role, role)!r} returned {what} "
                                   f"({type(result).__name__} {short(result)}); expected {expected}")

    def _checked_lists(self, result: Any, n: int) -> list[list[str]]:
        expected = f"a list of {n} list(s) of str, one per request, best first"
        if not isinstance(result, (list, tuple)):
            raise self._violation("generate", "no list", result, expected)
        if len(result) != n:
            raise self._violation("generate", f"{len(result)} list(s) for {n} request(s)", result, expected)
        lists = []
        for j, entry in enumerate(result):
            if not isinstance(entry, (list, tuple)):
                raise self._violation("generate", f"a {type(entry).__name__} for request {j}", entry, expected)
            bad = next((x for x in entry if not isinstance(x, str)), _OK)
            if bad is not _OK:
                raise self._violation("generate", f"a {type(bad).__name__} item in the list for request {j}",
                                      entry, expected)
            lists.append([str(x) for x in entry])
        return lists

    # -- score ---------------------------------------------------------------------------------
    def score(self, reqs: Sequence[RecRequest], items: Sequence[Sequence[str]]) -> list[np.ndarray]:
        if self._score is None:
            raise self._missing("score")
        reqs, items = list(reqs), [list(i) for i in items]
        result = self._score(reqs, items, **self.options)
        expected = f"{len(items)} 1-D array(s) of numbers, one per candidate list, each as long as its list"
        if isinstance(result, (str, bytes)) or not _is_iterable(result):
            raise self._violation("score", "no sequence", result, expected)
        rows = list(result)
        if len(rows) != len(items):
            raise self._violation("score", f"{len(rows)} row(s) for {len(items)} candidate list(s)", result,
                                  expected)
        out = []
        for j, (row, wanted) in enumerate(zip(rows, items)):
            try:
                arr = np.asarray(row, dtype=np.float64)
            except (TypeError, ValueError):
                raise self._violation("score", f"non-numbers for list {j}", row, expected) from None
            if arr.ndim != 1 or arr.shape[0] != len(wanted):
                raise self._violation("score", f"shape {arr.shape} for list {j} of {len(wanted)} candidate(s)",
                                      row, expected)
            out.append(arr)
        return out


_OK = object()


def _is_iterable(x: Any) -> bool:
    try:
        iter(x)
    except TypeError:
        return False
    return True
