"""GRM Suite: a generative reward model service (principles, critiques, voting) over gRPC.

The folders are the architecture (docs/architecture.md); each one's __init__ says what lives
there and what it may import. The layers, top to bottom: cli → services → integrations →
client | cache → rpc → scoring → metarm → backends → telemetry → core. A layer imports only
layers below it (the import-linter contracts in pyproject.toml enforce it); `v1` is the
generated gRPC code.
"""
