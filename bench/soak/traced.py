"""``osiris`` with a memory watcher, for bench/soak --tracemalloc / --objects.

    python traced.py tracemalloc|objects|trim OUT SECONDS [osiris arguments...]

Runs the ``osiris`` command in this process and, every SECONDS, appends to
OUT what grew since the first report (taken after one interval, the
warm-up):

* ``tracemalloc``: the 25 allocation sites (25 frames) whose memory grew
  most; tracing makes the agent several times slower and inflates RSS;
* ``objects``: live objects per type (``gc.get_objects``), the blocks
  Python's allocator holds, the entries of every ``functools.lru_cache``,
  and RSS; cheap enough to leave the agent's pace and RSS as they are;
* ``trim``: RSS before and after glibc's ``malloc_trim(0)`` (what malloc
  holds free goes back to the system; live memory stays). It changes the
  RSS the bench sees afterwards: a diagnosis, not a run to judge.

Bench equipment: the agent knows nothing of it.
"""

from __future__ import annotations

import collections
import functools
import gc
import re
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def sqlite_mb() -> str:
    """What SQLite has allocated now (sqlite3_memory_used), if it keeps count."""
    import ctypes

    try:
        lib = ctypes.CDLL(_sqlite_library())
    except OSError:
        return "?"
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return f"{lib.sqlite3_memory_used() / 2**20:.1f}"


def _sqlite_library() -> str:
    import _sqlite3

    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libsqlite3" in line:
            return line.split()[-1]
    return _sqlite3.__file__


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def watch_tracemalloc(out: str, every: float) -> None:
    base = None
    started = time.monotonic()
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        ])
        if base is None:
            base = snap
            continue
        stats = snap.compare_to(base, "traceback")
        current, peak = tracemalloc.get_traced_memory()
        with open(out, "a") as fh:
            fh.write(f"\n=== {(time.monotonic() - started) / 60:.1f} min: traced {current / 2**20:.1f} MiB "
                     f"(peak {peak / 2**20:.1f})\n")
            for st in stats[:25]:
                fh.write(f"{st.size_diff / 1024:+10.1f} KiB {st.count_diff:+8d} blocks\n")
                for line in st.traceback.format(limit=8):
                    fh.write(f"      {line}\n")


def _owner(container: object) -> str:
    """Who holds ``container``: the attribute of an object or a module global."""
    out = []
    for ref in gc.get_referrers(container):
        if isinstance(ref, dict):
            for holder in gc.get_referrers(ref):
                if getattr(holder, "__dict__", None) is ref:
                    name = next((k for k, v in ref.items() if v is container), "?")
                    out.append(f"{type(holder).__module__}.{type(holder).__qualname__}.{name}")
            if "__name__" in ref and ref.get("__name__"):
                name = next((k for k, v in ref.items() if v is container), None)
                if name:
                    out.append(f"{ref['__name__']}.{name}")
        if len(out) >= 3:
            break
    return ", ".join(out) or "(no named owner)"


def watch_trim(out: str, every: float) -> None:
    """RSS before and after glibc's malloc_trim(0) every ``every`` seconds:
    memory malloc holds free (fragmentation) goes back, live memory stays."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    started = time.monotonic()
    while True:
        time.sleep(every)
        before = rss_mb()
        libc.malloc_trim(0)
        with open(out, "a") as fh:
            fh.write(f"=== {(time.monotonic() - started) / 60:.1f} min: RSS {before:.1f} MB, "
                     f"after malloc_trim {rss_mb():.1f} MB; SQLite holds {sqlite_mb()} MB\n")


def watch_objects(out: str, every: float) -> None:
    base = None
    started = time.monotonic()
    while True:
        time.sleep(every)
        objects = gc.get_objects()
        counts = collections.Counter(type(o).__qualname__ for o in objects)
        caches = sorted((f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', repr(o))}",
                         o.cache_info().currsize) for o in objects
                        if isinstance(o, functools._lru_cache_wrapper) and o.cache_info().currsize)
        big = sorted(((len(o), id(o), o) for o in objects
                      if type(o) in (list, dict, set, collections.deque) and len(o) >= 500),
                     key=lambda x: x[:2], reverse=True)[:12]
        big_lines = [f"  {type(o).__name__} of {n}: {_owner(o)}" for n, _i, o in big]
        del objects, big
        blocks = sys.getallocatedblocks()
        if base is None:
            base = (counts, blocks)
        grew = sorted(((n - base[0].get(t, 0), t, n) for t, n in counts.items()), reverse=True)[:25]
        with open(out, "a") as fh:
            fh.write(f"\n=== {(time.monotonic() - started) / 60:.1f} min: RSS {rss_mb():.1f} MB, "
                     f"SQLite {sqlite_mb()} MB, "
                     f"{sum(counts.values())} gc objects, allocated blocks {blocks} ({blocks - base[1]:+d}), "
                     f"threads {threading.active_count()}\n")
            for diff, name, n in grew:
                fh.write(f"  {diff:+9d} {n:9d} {name}\n")
            fh.write("  largest containers:\n" + "\n".join(big_lines) + "\n")
            fh.write("  lru caches: " + ", ".join(f"{name} {n}" for name, n in caches) + "\n")


def guarded(watch, out: str, every: float) -> None:
    try:
        watch(out, every)
    except Exception:  # noqa: BLE001 - whatever stops the watcher, the report says why
        import traceback

        with open(out, "a") as fh:
            fh.write("\n=== the watcher stopped:\n" + traceback.format_exc())


def main() -> None:
    mode, out, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
    if mode == "tracemalloc":
        tracemalloc.start(25)
        target = watch_tracemalloc
    elif mode == "trim":
        target = watch_trim
    else:
        target = watch_objects
    threading.Thread(target=guarded, args=(target, out, every), daemon=True, name="bench-memory-watch").start()
    from osiris.cli import main as osiris

    osiris(sys.argv[4:])


if __name__ == "__main__":
    main()
