"""Generated gRPC code for protos/grm/v1 (`scripts/dev.sh protos`; a test fails on drift)."""
