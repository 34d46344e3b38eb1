"""BENCH ONLY, NEVER PRODUCTION: sts with the audit and lineage writes skipped.

This module exists so that the benchmark can measure what recording costs. It builds the
real app exactly as ``sts serve`` does, then MONKEYPATCHES
``sts.grants.token_exchange._record_issued`` with a no-op in THIS PROCESS ONLY (the bench's
second server). The exchange still opens and commits its transaction (and still reads
what it reads, the block check included); only the lineage row and the audit row of a
granted exchange are not written. sts itself has no setting to do this, on purpose: a
token without its lineage and audit cannot be revoked or investigated.

    STS_...=... python -m bench.no_governance --bind 127.0.0.1:8091 --workers 2
"""

from __future__ import annotations

from typing import Any

import sts.grants.token_exchange


def _skip_recording(transaction: Any, *_args: Any, identities: Any, **_kwargs: Any) -> Any:
    """BENCH ONLY: stands in for ``_record_issued``: the same block check (on PostgreSQL
    also sent with the COMMIT), but no lineage row and no audit row."""
    return transaction.check_blocks(identities)


def _no_status(*_args: Any, **_kwargs: Any) -> Any:
    """BENCH ONLY: stands in for ``allocate_token_status`` (no status-list index)."""
    from sts.status_list import TokenStatus

    return TokenStatus(0, 0, {"status_list": {"idx": 0, "uri": "bench-only"}})


def _build() -> Any:
    from sts.cli.serve import build_app

    app = build_app()
    # BENCH-ONLY MONKEYPATCH (see the module docstring): governance writes are skipped.
    sts.grants.token_exchange._record_issued = _skip_recording
    setattr(sts.grants.token_exchange, "allocate_token_status", _no_status)  # noqa: B010
    print("BENCH ONLY: audit and lineage writes are SKIPPED in this process", flush=True)
    return app


def main() -> None:
    from bench.servers import serve_in_this_process

    serve_in_this_process("BENCH ONLY: sts without audit/lineage", "127.0.0.1:8091", _build)


if __name__ == "__main__":
    main()
