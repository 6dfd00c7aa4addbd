"""Real child processes: `grm serve`, `grm up`, the benchmarks."""
