"""Thin helpers around joserfc shared by signing and verification."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from joserfc.errors import SecurityWarning


@contextlib.contextmanager
def accepting_eddsa(algorithms: object) -> Iterator[None]:
    """joserfc warns that RFC 9864 deprecates the "EdDSA" identifier in favour of
    "Ed25519". sts keeps using "EdDSA" on purpose: it is what verifiers (PyJWT, jose, ...)
    accept today. Silence exactly that warning, only where EdDSA is in play."""
    if "EdDSA" not in (algorithms if isinstance(algorithms, list | tuple | set) else [algorithms]):
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield
