"""``python -m bench.instructions``: callgrind's instruction counts per exchange."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import instructions

# A callgrind output file as valgrind 3.19 writes it (names compressed after first use,
# relative positions, a call's inclusive cost after its calls= line).
CALLGRIND_OUT = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
cmd: python -c ...
events: Ir
summary: 0

ob=(1) /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6
fl=(1) ???
fn=(1) sqlite3VdbeExec
0 700
+2 50
cob=(2) /root/.pyenv/versions/3.11.7/bin/python3.11
cfi=(2) ???
cfn=(2) _PyEval_EvalFrameDefault
calls=1 0
0 100000

ob=(2)
fl=(2)
fn=(2)
0 1000
* 200
ob=(3) /venv/site-packages/cryptography/hazmat/bindings/_rust.abi3.so
fl=(3) ???
fn=(3) ecdsa_sign
-1 40

totals: 1990
"""


def test_self_cost_per_object_skips_inclusive_call_costs() -> None:
    by_object = instructions.instructions_by_object(CALLGRIND_OUT)
    assert by_object == {
        "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6": 750,
        "/root/.pyenv/versions/3.11.7/bin/python3.11": 1200,
        "/venv/site-packages/cryptography/hazmat/bindings/_rust.abi3.so": 40,
    }
    assert sum(by_object.values()) == instructions.total_instructions(CALLGRIND_OUT)


def test_totals_not_the_start_up_summary() -> None:
    assert instructions.total_instructions(CALLGRIND_OUT) == 1990
    with pytest.raises(ValueError):
        instructions.total_instructions("events: Ir\n")


def test_libraries_by_object_file() -> None:
    assert instructions.library_of("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0") == "SQLite"
    assert instructions.library_of("/x/lib-dynload/_sqlite3.cpython-311.so") == "SQLite"
    assert instructions.library_of("/venv/psycopg_binary/_psycopg.so") == "psycopg + libpq"
    assert instructions.library_of("/venv/cryptography/_rust.abi3.so") == "crypto"
    assert instructions.library_of("/lib/x86_64-linux-gnu/libc.so.6") == "C library"
    assert instructions.library_of("/root/.pyenv/versions/3.11.7/bin/python3.11") == "Python"
    assert instructions.library_of("???") == "other"


def counted(checkout: str, governance: bool, total: int) -> instructions.Count:
    return instructions.Count(checkout, governance, 100, total, {"Python": total})


def test_ratios_between_checkouts_and_governance() -> None:
    counts = [
        counted("base", True, 400_000_000),
        counted("base", False, 300_000_000),
        counted("head", True, 360_000_000),
        counted("head", False, 300_000_000),
    ]
    lines = instructions.ratios(counts)
    assert "after ÷ before, governance on: 0.900" in lines
    assert "after ÷ before, governance off: 1.000" in lines
    assert "governance in base: +1,000 k instructions per exchange (+33.3 %)" in lines
    assert "governance in head: +600 k instructions per exchange (+20.0 %)" in lines
    table = instructions.table(counts)
    assert "| head | on | 3,600 k |" in table


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_real_count_in_this_checkout() -> None:
    """The app runs under callgrind; only the measured exchanges are counted (a few
    million instructions each, not the hundreds of millions of start-up)."""
    here = Path(instructions.__file__).resolve().parents[1]
    count = instructions.measure(here, "sqlite", "ci-deploy", 10, governance=True)
    assert 500_000 < count.per_exchange() < 50_000_000
    assert count.by_library["crypto"] > 0  # verify + sign
    assert count.by_library["SQLite"] > 0
    assert sum(count.by_library.values()) == count.total
