"""Adapters for RL training frameworks: TRL (`grm.integrations.trl`), verl
(`grm.integrations.verl`); OpenRLHF talks HTTP to the aggregator
(`grm.services.aggregator.http_rm`).

None of them imports its framework: each implements the framework's documented call contract
with the SDK, so they install and test without TRL, verl or OpenRLHF. `groups` scores the
responses of one prompt together (shared by the adapters and /get_reward).

May import client and core.
"""
