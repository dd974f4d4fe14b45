"""RFC 6962 tree hashing and proofs.

The reference vectors (leaf inputs, roots for sizes 1..8, audit paths and
consistency proofs) are the ones published with Google's
certificate-transparency reference implementation (python/ct/crypto/
merkle_test.py and in_memory_merkle_tree_test.py, Apache-2.0), used here as
test data.
"""

import os

import pytest

from osiris.evidence import merkle as M

LEAF_INPUTS = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def node_fn(leaves):
    def node(level, index):
        start = index << level
        assert start + (1 << level) <= len(leaves)
        if level == 0:
            return leaves[start]
        return M.node_hash(node(level - 1, 2 * index), node(level - 1, 2 * index + 1))
    return node


LEAVES = [M.leaf_hash(d) for d in LEAF_INPUTS]
NODE = node_fn(LEAVES)


def test_empty_tree_and_reference_roots():
    assert M.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert M.root(0, NODE) == M.EMPTY_ROOT == M.root_of_leaves([])
    for n in range(1, 9):
        assert M.root(n, NODE).hex() == ROOTS[n - 1]
        assert M.root_of_leaves(LEAVES[:n]).hex() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_reference_inclusion_proofs(index, size, path):
    proof = M.inclusion_proof(index, size, NODE)
    assert [p.hex() for p in proof] == path
    assert M.verify_inclusion(LEAVES[index], index, size, proof, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_reference_consistency_proofs(first, second, path):
    proof = M.consistency_proof(first, second, NODE)
    assert [p.hex() for p in proof] == path
    assert M.verify_consistency(first, second, bytes.fromhex(ROOTS[first - 1]), bytes.fromhex(ROOTS[second - 1]), proof)


def test_every_proof_of_a_generated_tree_verifies_and_wrong_ones_do_not():
    leaves = [M.leaf_hash(os.urandom(8)) for _ in range(41)]
    node = node_fn(leaves)
    roots = [M.root(n, node) for n in range(42)]
    for n in range(1, 42):
        for i in range(n):
            proof = M.inclusion_proof(i, n, node)
            assert M.verify_inclusion(leaves[i], i, n, proof, roots[n])
            assert not M.verify_inclusion(leaves[i], i, n, proof, roots[n - 1])
            assert not M.verify_inclusion(leaves[(i + 1) % n], i, n, proof, roots[n]) or n == 1
            if proof:
                assert not M.verify_inclusion(leaves[i], i, n, proof[:-1], roots[n])
        for m in range(0, n + 1):
            proof = M.consistency_proof(m, n, node)
            assert M.verify_consistency(m, n, roots[m], roots[n], proof)
            if 0 < m < n:
                assert not M.verify_consistency(m, n, roots[m], roots[n - 1], proof)
                assert not M.verify_consistency(m, n, roots[m - 1] if m > 1 else leaves[1], roots[n], proof)
    b = M.RootBuilder()
    for i, leaf in enumerate(leaves):
        b.add(leaf)
        assert b.root() == roots[i + 1]
    # In bulk, in chunks that straddle power-of-two boundaries (as verify feeds it).
    for chunk in (1, 3, 5, 7, 64):
        b = M.RootBuilder()
        for i in range(0, len(leaves), chunk):
            b.extend(leaves[i:i + chunk])
            assert b.root() == roots[b.size]


def test_out_of_range_requests_are_refused():
    with pytest.raises(ValueError):
        M.inclusion_proof(8, 8, NODE)
    with pytest.raises(ValueError):
        M.consistency_proof(5, 3, NODE)
    assert not M.verify_inclusion(LEAVES[0], 8, 8, [], bytes(32))
    assert not M.verify_consistency(5, 3, bytes(32), bytes(32), [])
