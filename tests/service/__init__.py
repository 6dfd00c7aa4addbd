"""Real servers inside the test process, on free loopback ports: gRPC services, engine
stand-ins, redis-server, a Kubernetes API emulator."""
