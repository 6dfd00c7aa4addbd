"""Shared test code: real servers on free ports, child processes, scripted backends."""
