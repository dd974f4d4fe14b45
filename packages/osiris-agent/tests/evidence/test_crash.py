"""SIGKILL the writer at random points, 200 times: every time the log opens,
holds only whole entries, chains on from where the last survivor stopped,
and verifies.

Each round forks one real child process that opens the log (recovering
whatever the previous child left) and appends random-sized batches, now and
then a checkpoint, in a tight loop; the parent kills it with SIGKILL and
checks what is on disk. The children are forked by a small single-threaded
process started once for the test (the "forker"), not by pytest's own
process: a fork copies whatever locks other threads hold at that moment
(earlier tests leave threads behind), and a child that inherits a held
lock never writes; the forker has no other threads. The new entries of each round are checked fully
(signature, seq, prev, leaf) and every new checkpoint's root against a tree
kept across rounds; the whole log is verified at the end.

When the kill lands must not depend on how fast this machine is: a loaded
CI runner may not even finish opening the log in 25 ms, and then no round
writes anything. So the child reports every commit through a pipe, and in
most rounds the parent first waits (without a time limit that matters) for
the child to have committed a few batches, or a checkpoint, and only then
kills it after a random 0-10 ms, somewhere in a later write. The other
rounds kill blindly 1-25 ms after the fork, so recovery itself, and opening
the log, are interrupted too. Which rounds are which comes from the seeded
generator, so the test proves progress (and durability: a reported commit
survives the kill) on any machine.
"""

import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest

from osiris.evidence.keys import SigningKey
from osiris.evidence.log import ZERO_HASH, EvidenceLog
from osiris.evidence.merkle import RootBuilder, leaf_hash
from osiris.evidence.verify import check_statement, verify_log

from .helpers import ORIGIN, new_log, statement

ROUNDS = 200


# The forker: reads "go ROUND FIFO" lines, forks a writer for each and
# answers "pid PID"; "reap PID" waits for that child and answers its status.
FORKER = r"""
import json, os, random, sys, traceback
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from osiris.evidence.keys import SigningKey
from osiris.evidence.log import EvidenceLog

path, key_hex, template = Path(sys.argv[1]), sys.argv[2], json.loads(Path(sys.argv[3]).read_text())
key = SigningKey(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key_hex)))


def report(fd, what):
    try:
        os.write(fd, what)  # tell the parent about a commit; never block the writer
    except BlockingIOError:
        pass  # the parent stopped reading: it has what it waited for


def writer(seed, fifo):
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        rnd = random.Random(seed)
        log = EvidenceLog(path, create=False)
        n = 0
        while True:
            batch = []
            for _ in range(rnd.randint(1, 64)):
                n += 1
                batch.append({**template, "id": f"{seed}-{n}"})
            log.append(batch, key)
            report(fd, b"a")  # committed: this batch must survive the kill
            if rnd.random() < 0.15:
                log.checkpoint(key)
                report(fd, b"c")
    except BaseException:
        (path.parent / "child-error.txt").write_text(traceback.format_exc())
    finally:
        os._exit(3)


for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "go":
        pid = os.fork()
        if pid == 0:
            writer(int(args[0]), args[1])
        print("pid", pid, flush=True)
    elif cmd == "reap":
        _, status = os.waitpid(int(args[0]), 0)
        print("status", status, flush=True)
"""


class Forker:
    def __init__(self, path, key, template_file):
        raw = key.private.private_bytes_raw().hex()
        self.proc = subprocess.Popen([sys.executable, "-c", FORKER, str(path), raw, str(template_file)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, line, answer):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        got = self.proc.stdout.readline().split()
        assert got and got[0] == answer, f"forker: {line!r} answered {got!r}"
        return int(got[1])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(60)


def _wait_for_commits(fd, appends, checkpoint, round_, limit=60.0):
    """Read the child's commit reports until it has committed ``appends``
    batches (and a checkpoint if asked). ``limit`` only stops a hang."""
    seen_a = seen_c = 0
    deadline = time.monotonic() + limit
    while seen_a < appends or (checkpoint and seen_c == 0):
        left = deadline - time.monotonic()
        assert left > 0, f"round {round_}: the writer committed only {seen_a} batches in {limit:g} s"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        if not data:
            break  # the writer died: the caller reports why
        seen_a += data.count(b"a")
        seen_c += data.count(b"c")
    return seen_a, seen_c


@pytest.mark.timeout(300)
def test_sigkill_at_random_points_never_leaves_a_partial_entry(tmp_path):
    key = SigningKey.generate()
    path = new_log(tmp_path, key).path
    template = tmp_path / "statement.json"
    template.write_text(json.dumps(dict(statement(0))))
    forker = Forker(path, key, template)
    rnd = random.Random(20240501)
    tree = RootBuilder()
    prev = ZERO_HASH
    seen_size = 0
    seen_cps: set[int] = set()
    roots: dict[int, bytes] = {}
    grew = 0
    waited_rounds = 0
    for round_ in range(ROUNDS):
        # Drawn every round, whatever happens, so the plan is the same on every machine.
        blind = rnd.random() < 0.25
        blind_delay = rnd.uniform(0.001, 0.025)
        want_appends = rnd.randint(1, 2)
        want_checkpoint = rnd.random() < 0.12
        later_delay = rnd.uniform(0.0, 0.010)
        fifo = tmp_path / f"round-{round_}.fifo"
        os.mkfifo(fifo)
        read_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # our own writer end: no EOF before the child opens it
        pid = forker.ask(f"go {round_} {fifo}", "pid")
        try:
            if blind:
                time.sleep(blind_delay)
            else:
                waited_rounds += 1
                appends, checkpoints = _wait_for_commits(read_fd, want_appends, want_checkpoint, round_)
                time.sleep(later_delay)
        finally:
            os.kill(pid, signal.SIGKILL)
            status = forker.ask(f"reap {pid}", "status")
            os.close(read_fd)
            fifo.unlink()
        err = path.parent / "child-error.txt"
        assert not err.exists(), f"round {round_}: the writer failed:\n{err.read_text()}"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"round {round_}: child exited"
        log = EvidenceLog(path, create=False)
        try:
            size = log.size()
            assert size >= seen_size, f"round {round_}: the log shrank from {seen_size} to {size}"
            if not blind:
                assert size >= seen_size + appends, f"round {round_}: {appends} committed batches were lost"
                if checkpoints:
                    cp = log.latest_checkpoint()
                    assert cp is not None and cp.size > seen_size, f"round {round_}: a committed checkpoint was lost"
            grew += size > seen_size
            for e in log.iter_entries(seen_size):
                assert e.body is not None and e.sig is not None and len(e.leaf) == 32, f"partial entry {e.index}"
                check_statement(e.body, e.sig, key.verify_key, index=e.index, prev=prev, origin=ORIGIN,
                                bundle_id=e.bundle_id, kind=e.kind, recorded_at=e.recorded_at)
                assert leaf_hash(e.body) == e.leaf
                json.loads(e.body)
                tree.add(e.leaf)
                roots[tree.size] = tree.root()
                prev = e.leaf
            for cp in log.checkpoints(since_size=1):
                if cp.size not in seen_cps:
                    assert cp.size <= size and roots[cp.size] == cp.root, f"round {round_}: checkpoint {cp.size}"
                    seen_cps.add(cp.size)
            seen_size = size
        finally:
            log.close()
    forker.close()
    assert grew >= waited_rounds > ROUNDS // 2, f"the writer made progress in only {grew} of {ROUNDS} rounds"
    assert len(seen_cps) > 10
    final = verify_log(EvidenceLog(path, create=False))
    assert final.ok, final.summary()
    assert final.entries == seen_size and final.signatures == seen_size
