"""The evidence log's memory stays small however large the log grows."""

import subprocess
import sys
import textwrap

from ..conftest import REPO

SCRIPT = textwrap.dedent('''
    import ctypes, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from helpers import new_log, statement
    from osiris.evidence.keys import load_or_create

    tmp = Path(sys.argv[1])
    key = load_or_create(tmp / "keys", create=True)
    log = new_log(tmp, key)
    path, start = tmp / "evidence" / "log.sqlite3", 0
    while path.stat().st_size < 20 * 2**20 and start < 200_000:  # a log well past the bound
        log.append([statement(i, host=f"h{i % 50}") for i in range(start, start + 400)], key)
        start += 400
    lib = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libsqlite3" in line)
    used = ctypes.CDLL(lib)
    used.sqlite3_memory_used.restype = ctypes.c_int64
    print(path.stat().st_size, used.sqlite3_memory_used())
    log.close()
''')


def test_sqlite_memory_does_not_grow_with_the_log(tmp_path):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(REPO / "packages/osiris-agent/tests/evidence")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    log_bytes, sqlite_bytes = map(int, res.stdout.split())
    assert log_bytes > 15 * 2**20, "the log must outgrow the bound for this to show anything"
    assert sqlite_bytes < 10 * 2**20, f"SQLite holds {sqlite_bytes / 2**20:.1f} MiB for a {log_bytes / 2**20:.0f} MiB log"
