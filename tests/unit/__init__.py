"""Pure logic and in-process pipelines: no sockets, no child processes."""
