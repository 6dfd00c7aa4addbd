"""gRPC plumbing shared by the services and the client: the server (health, reflection,
interceptors, graceful shutdown), transport security, proto ⇄ core conversion (`convert`),
and typed settings from flags and `GRM_*` variables (`options`).

May import scoring, metarm, backends, telemetry, core and the generated `grm.v1`.
"""
