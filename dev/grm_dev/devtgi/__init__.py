"""`grm dev-tgi`: a development server speaking text-generation-inference's HTTP API.

TGI itself (Rust/CUDA) cannot run on a CPU-only machine, so this stands in for it locally and
in tests: the embedded llama.cpp model (or, with `--scripted`, a model-free judge) behind
TGI's routes, limits and error bodies, checked against TGI's OpenAPI document by the contract
tests. It is not a TGI reimplementation: no batching, no streaming, no general grammars.
"""

from grm_dev.devtgi.app import (
    STATE,
    DevTgiSettings,
    DevTgiState,
    Exchange,
    FaultSettings,
    create_app,
)
from grm_dev.devtgi.main import DevTgiServer, add_arguments, main, run, start_dev_server

__all__ = [
    "STATE",
    "DevTgiServer",
    "DevTgiSettings",
    "DevTgiState",
    "Exchange",
    "FaultSettings",
    "add_arguments",
    "create_app",
    "main",
    "run",
    "start_dev_server",
]
