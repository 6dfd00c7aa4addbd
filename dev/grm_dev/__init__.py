"""GRM Suite development tools: benchmarks (`grm bench`) and engine stand-ins (`grm dev-tgi`).

Not part of the runtime package: the production image does not install it. It may import any
layer of `grm`; nothing in `grm` imports it except the CLI's `bench` and `dev-tgi` commands,
which load it lazily and say how to install it when it is missing.
"""
