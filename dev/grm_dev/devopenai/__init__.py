"""`grm dev-openai`: a development server speaking the OpenAI-compatible API of an engine.

vLLM, SGLang, llama.cpp's server and TGI all serve chat completions; each spells constrained
decoding, its limits, its load gauges and its errors its own way. This server speaks one of
those dialects over the same engines and fault injection as `grm dev-tgi`, so the openai
backend, the benchmarks and the reliability tests run on every engine without a GPU.
"""

from grm_dev.devopenai.app import (
    DIALECTS,
    STATE,
    DevOpenAiSettings,
    DevOpenAiState,
    create_app,
)
from grm_dev.devopenai.main import DevOpenAiServer, add_arguments, main, run, start_dev_server

__all__ = [
    "DIALECTS",
    "STATE",
    "DevOpenAiServer",
    "DevOpenAiSettings",
    "DevOpenAiState",
    "add_arguments",
    "create_app",
    "main",
    "run",
    "start_dev_server",
]
