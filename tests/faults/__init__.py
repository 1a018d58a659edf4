"""Fault tests: one fault under load each, reporting a row of docs/reliability.md."""
