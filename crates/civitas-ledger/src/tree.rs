//! The Merkle tree (RFC 6962 hashing) in the stored-hash layout of C2SP tlog-tiles.
//!
//! Appends keep only the tree's right edge in memory (one hash per level, a [`Frontier`]);
//! every hash ever computed is written to storage under its stored-hash index, from which
//! `tlog_tiles` builds proofs and tiles.

use std::cell::RefCell;
use std::collections::HashMap;

/// The underlying RFC 6962 / tlog implementation, for clients that build proofs themselves.
pub use tlog_tiles as tlog;
pub use tlog_tiles::{EMPTY_HASH, Hash, node_hash, record_hash, stored_hash_index};
use tlog_tiles::{HashReader, RecordProof, TreeProof};

use crate::LedgerError;

/// The right edge of the tree: for each level, the hash of the complete subtree at that
/// level which has no right sibling yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Option<Hash>>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn empty() -> Frontier {
        Frontier {
            size: 0,
            nodes: Vec::new(),
        }
    }

    /// The stored-hash indexes whose hashes make up the frontier of a tree of `size`, by level.
    pub fn indexes(size: u64) -> Vec<(usize, u64)> {
        (0..64)
            .filter(|k| (size >> k) & 1 == 1)
            .map(|k| (k as usize, stored_hash_index(k as u8, (size >> k) - 1)))
            .collect()
    }

    /// Rebuilds the frontier of a tree of `size` from the hashes at [`Frontier::indexes`].
    pub fn from_hashes(size: u64, hashes: &[Hash]) -> Result<Frontier, LedgerError> {
        let idx = Frontier::indexes(size);
        if idx.len() != hashes.len() {
            return Err(LedgerError::Corrupt(format!(
                "the frontier of a tree of {size} needs {} hashes",
                idx.len()
            )));
        }
        let mut nodes = vec![None; idx.last().map_or(0, |(k, _)| k + 1)];
        for ((k, _), h) in idx.iter().zip(hashes) {
            nodes[*k] = Some(*h);
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (its record hash) and pushes every new stored hash with its index.
    pub fn append(&mut self, leaf: Hash, out: &mut Vec<(u64, Hash)>) {
        let n = self.size;
        let mut h = leaf;
        out.push((stored_hash_index(0, n), h));
        let mut k = 0usize;
        while (n >> k) & 1 == 1 {
            let left = self.nodes[k]
                .take()
                .expect("a set bit of the size has a frontier node");
            h = node_hash(left, h);
            out.push((stored_hash_index(k as u8 + 1, n >> (k + 1)), h));
            k += 1;
        }
        if self.nodes.len() <= k {
            self.nodes.resize(k + 1, None);
        }
        self.nodes[k] = Some(h);
        self.size += 1;
    }

    /// The root hash of the tree.
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for h in self.nodes.iter().flatten() {
            acc = Some(match acc {
                None => *h,
                Some(right) => node_hash(*h, right),
            });
        }
        acc.unwrap_or(EMPTY_HASH)
    }
}

/// A hash reader that records what `tlog_tiles` asks for, so the hashes can be fetched
/// asynchronously (from storage, or from a log's public tiles) and the computation run
/// again with [`Prefetched`].
#[derive(Default)]
pub struct Recording(RefCell<Vec<u64>>);

impl HashReader for Recording {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![EMPTY_HASH; indexes.len()])
    }
}

impl Recording {
    /// The stored-hash indexes asked for.
    pub fn take(self) -> Vec<u64> {
        self.0.into_inner()
    }
}

/// Hashes fetched ahead of a computation, by stored-hash index.
pub struct Prefetched(pub HashMap<u64, Hash>);

impl HashReader for Prefetched {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Checks an inclusion proof of leaf `index` with record hash `leaf` in a tree of `size` with `root`.
pub fn verify_inclusion(
    proof: &RecordProof,
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), LedgerError> {
    tlog_tiles::check_record(proof, size, root, index, leaf).map_err(|e| {
        LedgerError::ProofFailed(format!(
            "inclusion of entry {index} in a tree of {size}: {e}"
        ))
    })
}

/// Checks that the tree of `new_size` with `new_root` extends the tree of `old_size` with `old_root`.
pub fn verify_consistency(
    proof: &TreeProof,
    new_size: u64,
    new_root: Hash,
    old_size: u64,
    old_root: Hash,
) -> Result<(), LedgerError> {
    if old_size == 0 {
        return Ok(());
    }
    tlog_tiles::check_tree(proof, new_size, new_root, old_size, old_root).map_err(|e| {
        LedgerError::ProofFailed(format!("consistency of {old_size} with {new_size}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole tree in memory, for checking the frontier against `tlog_tiles`.
    struct Memory(HashMap<u64, Hash>);
    impl HashReader for Memory {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(indexes.iter().map(|i| self.0[i]).collect())
        }
    }

    fn hex(h: &Hash) -> String {
        crate::event::hex(&h.0)
    }

    #[test]
    fn leaf_and_node_hashes_match_rfc_6962() {
        // SHA-256(0x00), SHA-256(0x00 || "abc") and SHA-256(0x01 || l || l), computed with Python's hashlib.
        let l = record_hash(b"");
        assert_eq!(
            hex(&l),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex(&record_hash(b"abc")),
            "609f6e36d2405585188d5cfd761f407c7cc46a7d3f314c88270469dde315fcd1"
        );
        assert_eq!(
            hex(&node_hash(l, l)),
            "fe43d66afa4a9a5c4f9c9da89f4ffb52635c8f342e7ffb731d68e36c5982072a"
        );
        assert_eq!(
            hex(&EMPTY_HASH),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_matches_tlog_tiles_for_every_size_up_to_300() {
        let mut f = Frontier::empty();
        let mut mem = HashMap::new();
        for i in 0..300u64 {
            let mut out = Vec::new();
            f.append(record_hash(&i.to_be_bytes()), &mut out);
            let expected =
                tlog_tiles::stored_hashes(i, &i.to_be_bytes(), &Memory(mem.clone())).unwrap();
            assert_eq!(
                out.iter().map(|(_, h)| *h).collect::<Vec<_>>(),
                expected,
                "stored hashes of {i}"
            );
            for (k, (idx, _)) in out.iter().enumerate() {
                assert_eq!(*idx, tlog_tiles::stored_hash_index(0, i) + k as u64);
            }
            mem.extend(out);
            assert_eq!(
                f.root(),
                tlog_tiles::tree_hash(i + 1, &Memory(mem.clone())).unwrap()
            );
            let idx = Frontier::indexes(i + 1);
            let hashes: Vec<Hash> = idx.iter().map(|(_, x)| mem[x]).collect();
            assert_eq!(Frontier::from_hashes(i + 1, &hashes).unwrap(), f);
        }
    }
}

#[cfg(test)]
mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use tlog_tiles::HashReader;

    use super::*;

    /// A whole tree of `size` leaves in memory, built with the frontier.
    struct Tree {
        hashes: HashMap<u64, Hash>,
        roots: Vec<Hash>,
    }

    impl HashReader for Tree {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            indexes
                .iter()
                .map(|i| {
                    self.hashes
                        .get(i)
                        .copied()
                        .ok_or(tlog_tiles::Error::IndexesNotInTree)
                })
                .collect()
        }
    }

    fn leaf(seed: u64, i: u64) -> Hash {
        record_hash(&[seed.to_be_bytes(), i.to_be_bytes()].concat())
    }

    fn build(seed: u64, size: u64) -> Tree {
        let mut f = Frontier::empty();
        let mut out = Vec::with_capacity(size as usize * 2);
        let mut roots = Vec::with_capacity(size as usize + 1);
        roots.push(f.root());
        for i in 0..size {
            f.append(leaf(seed, i), &mut out);
            roots.push(f.root());
        }
        Tree {
            hashes: out.into_iter().collect(),
            roots,
        }
    }

    fn flip(h: &mut Hash, bit: usize) {
        h.0[(bit / 8) % 32] ^= 1 << (bit % 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        #[test]
        fn every_inclusion_proof_verifies_and_any_flipped_bit_fails(
            seed in any::<u64>(),
            size in 1u64..100_000,
            picks in proptest::collection::vec(any::<u64>(), 8),
            bit in 0usize..256,
        ) {
            let tree = build(seed, size);
            let root = tree.roots[size as usize];
            for p in &picks {
                let n = p % size;
                let proof = tlog_tiles::prove_record(size, n, &tree).unwrap();
                prop_assert!(verify_inclusion(&proof, size, root, n, leaf(seed, n)).is_ok());
                let mut bad_leaf = leaf(seed, n);
                flip(&mut bad_leaf, bit);
                prop_assert!(verify_inclusion(&proof, size, root, n, bad_leaf).is_err());
                let mut bad_root = root;
                flip(&mut bad_root, bit);
                prop_assert!(verify_inclusion(&proof, size, bad_root, n, leaf(seed, n)).is_err());
                if !proof.is_empty() {
                    let mut bad_proof = proof.clone();
                    let at = (*p as usize / 7) % bad_proof.len();
                    flip(&mut bad_proof[at], bit);
                    prop_assert!(verify_inclusion(&bad_proof, size, root, n, leaf(seed, n)).is_err());
                }
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_any_flipped_bit_fails(
            seed in any::<u64>(),
            size in 2u64..100_000,
            picks in proptest::collection::vec(any::<u64>(), 8),
            bit in 0usize..256,
        ) {
            let tree = build(seed, size);
            let new_root = tree.roots[size as usize];
            for p in &picks {
                let old = 1 + p % (size - 1);
                let old_root = tree.roots[old as usize];
                let proof = tlog_tiles::prove_tree(size, old, &tree).unwrap();
                prop_assert!(verify_consistency(&proof, size, new_root, old, old_root).is_ok());
                let mut bad_old = old_root;
                flip(&mut bad_old, bit);
                prop_assert!(verify_consistency(&proof, size, new_root, old, bad_old).is_err());
                let mut bad_new = new_root;
                flip(&mut bad_new, bit);
                prop_assert!(verify_consistency(&proof, size, bad_new, old, old_root).is_err());
                if !proof.is_empty() {
                    let mut bad_proof = proof.clone();
                    let at = (*p as usize / 7) % bad_proof.len();
                    flip(&mut bad_proof[at], bit);
                    prop_assert!(verify_consistency(&bad_proof, size, new_root, old, old_root).is_err());
                }
            }
        }
    }
}
