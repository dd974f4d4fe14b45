"""The endpoint's durable queue: numbering, acknowledgement, bounds that
drop the oldest events as a counted gap, and a new queue id per file."""

from __future__ import annotations

import time

from osiris_endpoint.queue import Gap, Queue


def test_events_are_numbered_kept_until_acked_and_survive_reopening(tmp_path):
    q = Queue(tmp_path / "q.sqlite3")
    seqs = [q.put("a.b", 1000 + i, '{"i": %d}' % i) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    events, gaps = q.pending(0, 2)
    assert [e.seq for e in events] == [1, 2] and gaps == []
    q.ack(3)
    queue_id = q.queue_id
    q.close()
    again = Queue(tmp_path / "q.sqlite3")
    assert again.queue_id == queue_id and again.acked == 3
    assert [e.seq for e in again.pending(0, 10)[0]] == [4, 5]
    assert again.put("a.b", 2000, "{}") == 6  # numbering goes on, never reused
    again.ack(2)  # an older ack changes nothing
    assert again.acked == 3
    assert Queue(tmp_path / "other.sqlite3").queue_id != queue_id


def test_the_size_bound_drops_the_oldest_as_one_counted_gap(tmp_path):
    q = Queue(tmp_path / "q.sqlite3", max_bytes=1000)
    for i in range(20):
        q.put("a.b", i, "x" * 100)  # ~170 bytes each: about 5 fit
    events, gaps = q.pending(0, 100)
    assert q.dropped == 20 - len(events) > 0
    assert gaps == [Gap(1, q.dropped, gaps[0].reason)] and "queue was full" in gaps[0].reason
    assert [e.seq for e in events] == list(range(q.dropped + 1, 21))
    q.ack(events[-1].seq)
    assert q.pending(0, 100) == ([], [])


def test_the_age_bound_drops_events_older_than_it(tmp_path):
    q = Queue(tmp_path / "q.sqlite3", max_age=0.2)
    q.put("a.b", 1, "{}")
    q.put("a.b", 2, "{}")
    time.sleep(0.3)
    q.put("a.b", 3, "{}")
    events, gaps = q.pending(0, 10)
    assert [e.seq for e in events] == [3] and [(g.from_seq, g.to_seq) for g in gaps] == [(1, 2)]
    assert q.dropped == 2
