"""Thin helpers around joserfc shared by signing and verification."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from joserfc.errors import JoseError, SecurityWarning

# What parsing an untrusted compact JWS and its JSON can raise besides joserfc's own
# errors: bad base64 or JSON (ValueError), bytes that are not UTF-8, and JSON nested
# deeper than the interpreter's recursion limit (a few kilobytes of "[" do it), which is
# a RecursionError, not a ValueError: uncaught, a 500 instead of a refusal.
MALFORMED_JWS = (JoseError, ValueError, UnicodeDecodeError, RecursionError)


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
