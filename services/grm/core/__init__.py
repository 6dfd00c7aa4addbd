"""Pure logic, no I/O: types, errors, validation, the request plan, prompt templates, score
parsing, seeds and orders, voting, the k planner, the SPCT rule, single-flight.

Imports nothing from grm outside core, and no transport, storage, engine or telemetry library
(contract `pure-core`). Everything above builds on it.
"""
