"""SIGKILL the writer at random points, 200 times: every time the log opens,
holds only whole entries, chains on from where the last survivor stopped,
and verifies.

Each round forks one real child process that opens the log (recovering
whatever the previous child left) and appends random-sized batches, now and
then a checkpoint, in a tight loop; the parent kills it with SIGKILL after a
random 1-25 ms and checks what is on disk. The new entries of each round are
checked fully (signature, seq, prev, leaf) and every new checkpoint's root
against a tree kept across rounds; the whole log is verified at the end.
"""

import json
import os
import random
import signal
import time

import pytest

from osiris.evidence.keys import SigningKey
from osiris.evidence.log import ZERO_HASH, EvidenceLog
from osiris.evidence.merkle import RootBuilder, leaf_hash
from osiris.evidence.verify import check_statement, verify_log

from .helpers import ORIGIN, new_log, statement

ROUNDS = 200


def _writer(path, key, seed):  # runs in the child; never returns
    try:
        rnd = random.Random(seed)
        log = EvidenceLog(path, create=False)
        base = statement(seed)
        n = 0
        while True:
            batch = []
            for _ in range(rnd.randint(1, 64)):
                n += 1
                batch.append({**base, "id": f"{seed}-{n}"})
            log.append(batch, key)
            if rnd.random() < 0.15:
                log.checkpoint(key)
    except BaseException:  # noqa: BLE001 - tell the parent why, then die
        import traceback

        (path.parent / "child-error.txt").write_text(traceback.format_exc())
    finally:
        os._exit(3)


@pytest.mark.timeout(120)
def test_sigkill_at_random_points_never_leaves_a_partial_entry(tmp_path):
    key = SigningKey.generate()
    path = new_log(tmp_path, key).path
    rnd = random.Random(20240501)
    tree = RootBuilder()
    prev = ZERO_HASH
    seen_size = 0
    seen_cps: set[int] = set()
    roots: dict[int, bytes] = {}
    grew = 0
    for round_ in range(ROUNDS):
        pid = os.fork()
        if pid == 0:
            _writer(path, key, round_)
        time.sleep(rnd.uniform(0.001, 0.025))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        err = path.parent / "child-error.txt"
        assert not err.exists(), f"round {round_}: the writer failed:\n{err.read_text()}"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"round {round_}: child exited"
        log = EvidenceLog(path, create=False)
        try:
            size = log.size()
            assert size >= seen_size, f"round {round_}: the log shrank from {seen_size} to {size}"
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
    assert grew > ROUNDS // 4, f"the writer made progress in only {grew} of {ROUNDS} rounds"
    assert len(seen_cps) > 10
    final = verify_log(EvidenceLog(path, create=False))
    assert final.ok, final.summary()
    assert final.entries == seen_size and final.signatures == seen_size
