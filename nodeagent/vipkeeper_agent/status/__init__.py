"""The agent's local, machine-readable status: a JSON snapshot served on a Unix socket."""
