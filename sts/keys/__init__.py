"""Signing keys: material, keystores (where private keys rest, encrypted) and the key ring."""
