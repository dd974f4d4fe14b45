"""Merkle tree hashing and proofs in the RFC 6962 shape (as restated in
RFC 9162 section 2.1).

Why our own code: the tree has to live inside the log's own SQLite
transaction (entries and tree nodes commit together, one fsync) and has to
be recomputed at hashing speed during verification; the algorithms are a
few dozen lines straight from the RFC. The Python libraries we looked at
either keep their own storage (pymerkle) or are unmaintained
(certificate-transparency's Python tree). The tests check these functions
against the RFC 6962 reference test vectors published with Google's
certificate-transparency code.

Hashes: ``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left ||
right)``, the empty tree's root is ``SHA-256("")``. A tree of ``n`` leaves
splits at the largest power of two smaller than ``n``.

Proof generation works from a ``node(level, index)`` function returning
the hash of the perfect subtree over leaves ``[index * 2**level, (index + 1)
* 2**level)``; the log serves those from its node table, so a proof costs
O(log n) lookups whatever the tree size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT", "leaf_hash", "node_hash", "subtree_root", "root", "inclusion_proof", "consistency_proof",
    "verify_inclusion", "verify_consistency", "RootBuilder", "root_of_leaves",
]

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()

NodeFn = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(start: int, end: int, node: NodeFn) -> bytes:
    """MTH(D[start:end]) for the ranges the RFC's recursion produces."""
    n = end - start
    if n <= 0:
        raise ValueError(f"empty range [{start}, {end})")
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_root(start, start + k, node), subtree_root(start + k, end, node))


def root(size: int, node: NodeFn) -> bytes:
    return EMPTY_ROOT if size == 0 else subtree_root(0, size, node)


def inclusion_proof(index: int, size: int, node: NodeFn) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 section 2.1.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    out: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append(subtree_root(start + k, end, node))
            end = start + k
        else:
            out.append(subtree_root(start, start + k, node))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_proof(first: int, second: int, node: NodeFn) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 6962 section 2.1.2."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    out: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append(subtree_root(start, end, node))
            break
        k = _split(n)
        if m <= k:
            out.append(subtree_root(start + k, end, node))
            end = start + k
        else:
            out.append(subtree_root(start, start + k, node))
            start, m, complete = start + k, m - k, False
    out.reverse()
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2 (a tree is consistent with the empty tree)."""
    if first > second or first < 0:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


class RootBuilder:
    """Streaming tree head: feed leaf hashes in order (one by one, or in
    bulk), ask for the root of what was fed at any point. Keeps one
    (level, hash) per set bit of the size. In bulk every aligned
    power-of-two run of leaves is reduced level by level in list
    comprehensions, so verifying a million leaves costs about two million
    SHA-256 calls and little interpreter time."""

    __slots__ = ("size", "_stack")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing

    def add(self, leaf: bytes) -> None:
        self.extend((leaf,))

    def extend(self, leaves: Sequence[bytes]) -> None:
        sha256 = _sha256
        stack = self._stack
        i, n = 0, len(leaves)
        while i < n:
            level = (n - i).bit_length() - 1
            if self.size:
                level = min(level, (self.size & -self.size).bit_length() - 1)
            run = leaves[i:i + (1 << level)]
            while len(run) > 1:
                run = [sha256(b"\x01" + run[j] + run[j + 1]).digest() for j in range(0, len(run), 2)]
            i += 1 << level
            self.size += 1 << level
            h = run[0]
            while stack and stack[-1][0] == level:
                h = sha256(b"\x01" + stack.pop()[1] + h).digest()
                level += 1
            stack.append((level, h))

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r


def root_of_leaves(leaves: Iterable[bytes]) -> bytes:
    b = RootBuilder()
    b.extend(list(leaves))
    return b.root()
