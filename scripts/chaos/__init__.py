"""Fault injection against the running platform (the reliability suite's long scenarios)."""
