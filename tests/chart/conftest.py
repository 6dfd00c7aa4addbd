"""Every chart scenario rendered once per module (helm template is the slow part)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helm import SCENARIOS, load_docs, scenario_args, template


@pytest.fixture(scope="module")
def rendered_text() -> dict[str, str]:
    return {name: template(name, *scenario_args(name)).stdout for name in SCENARIOS}


@pytest.fixture(scope="module")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: load_docs(text) for name, text in rendered_text.items()}
