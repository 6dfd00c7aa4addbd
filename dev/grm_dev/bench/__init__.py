"""Benchmarks behind `grm bench`: each scenario prints a table and writes JSON."""
