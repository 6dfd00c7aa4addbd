"""The `grm` command line (`main`): `score`, `serve`, `up`, `spct-data`, and, when the
development tools are installed, `bench` and `dev-tgi` (from grm_dev). Also the one process
launcher (`launcher`), local in-process scoring (`local`) and the JSONL file runner
(`scorefile`, `results`).

The top layer: may import any other; only here may grm_dev be imported (lazily).
"""
