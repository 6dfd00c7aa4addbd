"""The GRM method over any sample source: the pipeline (k samples → parse → re-sample → meta
RM → vote), the critique sampler (prompt → backend → parsed sample) and the principle
generator. Transport-free: the same code runs in-process (`grm score`) and behind the
services.

May import core, telemetry, backends and metarm.
"""
