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

from collections.abc import Callable
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


def serve_recording_with(
    record: Callable[..., Any],
    *,
    description: str,
    bind: str,
    banner: str,
    prepare: Callable[[Any], None] | None = None,
) -> None:
    """Serve the real app, built exactly as ``sts serve`` builds it (then ``prepare``d),
    with ``record`` standing in for ``_record_issued`` and no status-list index: BENCH
    ONLY, in this process only (this module and ``bench.minimal_record``)."""
    from bench.servers import serve_in_this_process

    def build() -> Any:
        from sts.cli.serve import build_app

        app = build_app()
        if prepare is not None:
            prepare(app)
        # BENCH-ONLY MONKEYPATCH (see the module docstring).
        setattr(sts.grants.token_exchange, "_record_issued", record)  # noqa: B010
        setattr(sts.grants.token_exchange, "allocate_token_status", _no_status)  # noqa: B010
        print(banner, flush=True)
        return app

    serve_in_this_process(description, bind, build)


def main() -> None:
    serve_recording_with(
        _skip_recording,
        description="BENCH ONLY: sts without audit/lineage",
        bind="127.0.0.1:8091",
        banner="BENCH ONLY: audit and lineage writes are SKIPPED in this process",
    )


if __name__ == "__main__":
    main()
