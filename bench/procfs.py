"""CPU and memory of a server's whole process tree, read from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = children_map()
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) (fields 14 and 15 of stat).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU of the master and every worker: utime + stime, summed over the tree."""
    return sum(cpu_seconds(member) for member in tree(pid))


def rss_kib(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * PAGE_KIB


def tree_rss_kib(pid: int) -> dict[str, int]:
    """RSS per process of the tree, keyed ``master`` and ``worker-<pid>``."""
    members = tree(pid)
    return {
        ("master" if member == pid else f"worker-{member}"): rss_kib(member) for member in members
    }


def _command_lines() -> Iterator[tuple[int, bytes]]:
    """(pid, command line with its arguments joined by spaces) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        yield int(entry), cmdline


def postgres_backends(database: str) -> list[int]:
    """The PostgreSQL backends serving ``database``: processes whose title is
    "postgres: [<cluster>: ]<user> <database> <client> <state>", whatever the user. Only
    backends: a client whose arguments name the database (psql -d <database>) is not one."""
    name = f" {database} ".encode()
    return [
        pid for pid, title in _command_lines() if title.startswith(b"postgres: ") and name in title
    ]


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS
