"""Tokens: verify inbound tokens, build claims (pure), mint (sign)."""
