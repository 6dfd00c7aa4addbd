"""The three services, each a thin servicer over its logic plus a `main` that wires it from
typed settings: `aggregator` (RewardService, the front door), `sampler` (CritiqueService) and
`principles` (PrincipleService). The two backend services share `bootstrap`.

The services are independent of each other (contract `services`); they may import every
layer below (integrations, client, cache, rpc, scoring, metarm, backends, telemetry, core).
"""
