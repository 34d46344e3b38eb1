"""Grants: one module per grant type, each filling in only its own step of the pipeline."""
