//! The RFC 9162 Merkle tree (§2.1): hashes, an incremental root, inclusion proofs.
//!
//! `MTH({}) = SHA-256()`, `MTH({d}) = SHA-256(0x00 || d)`, and for n > 1 with k the largest
//! power of two smaller than n, `MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`.
//! The leaves here are record lines without their newline.

use ring::digest::{Context, SHA256};

use crate::digest::Digest;

/// Returns the leaf hash of one record line: `SHA-256(0x00 || line)`.
pub fn leaf_hash(line: &[u8]) -> Digest {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(line);
    Digest::from_ring(ctx.finish())
}

/// Returns an interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(&left.0);
    ctx.update(&right.0);
    Digest::from_ring(ctx.finish())
}

/// Computes the tree head over a stream of leaves with O(log n) memory.
///
/// It keeps the roots of the perfect subtrees that the leaves so far decompose into, largest
/// first; the tree head folds them from the right.
#[derive(Debug, Clone, Default)]
pub struct MerkleBuilder {
    stack: Vec<(u64, Digest)>,
    count: u64,
}

impl MerkleBuilder {
    /// Starts an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf: Digest) {
        let mut size = 1;
        let mut hash = leaf;
        while let Some(&(top_size, top)) = self.stack.last() {
            if top_size != size {
                break;
            }
            self.stack.pop();
            hash = node_hash(&top, &hash);
            size *= 2;
        }
        self.stack.push((size, hash));
        self.count += 1;
    }

    /// Returns the number of leaves added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the tree head of the leaves added so far.
    pub fn root(&self) -> Digest {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut hash)) = iter.next() else {
            return Digest::of(b"");
        };
        for (_, left) in iter {
            hash = node_hash(left, &hash);
        }
        hash
    }
}

/// Returns the RFC 9162 audit path (§2.1.3.1) of leaf `index` in the tree over `leaves`.
///
/// Returns `None` if `index` is out of range.
pub fn inclusion_path(leaves: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut slice = leaves;
    let mut m = index;
    // Walk down from the root, collecting the sibling subtree at each level; the path is
    // listed bottom-up, so collect top-down and reverse.
    while slice.len() > 1 {
        let k = largest_power_of_two_below(slice.len());
        if m < k {
            path.push(subtree_root(&slice[k..]));
            slice = &slice[..k];
        } else {
            path.push(subtree_root(&slice[..k]));
            slice = &slice[k..];
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Recomputes the tree head from a leaf hash, its index, the tree size and its audit path
/// (the verification algorithm of RFC 9162 §2.1.3.2).
///
/// Returns `None` if the path does not fit the index and size.
pub fn root_from_path(leaf: Digest, index: u64, size: u64, path: &[Digest]) -> Option<Digest> {
    if index >= size {
        return None;
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// Returns the tree head of a slice of leaf hashes (recursive definition; for proofs).
pub fn subtree_root(leaves: &[Digest]) -> Digest {
    let mut b = MerkleBuilder::new();
    for leaf in leaves {
        b.push(*leaf);
    }
    b.root()
}

fn largest_power_of_two_below(n: usize) -> usize {
    debug_assert!(n > 1);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Domain separation of leaves (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain separation of interior nodes (RFC 9162 §2.1.1).
const NODE_PREFIX: u8 = 0x01;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The definition, written out recursively.
    fn naive_root(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => Digest::of(b""),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| leaf_hash(format!("record {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn known_small_trees() {
        assert_eq!(
            MerkleBuilder::new().root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let l = leaves(3);
        let expected = node_hash(&node_hash(&l[0], &l[1]), &l[2]);
        assert_eq!(subtree_root(&l), expected);
        assert_eq!(
            inclusion_path(&l, 2).unwrap(),
            vec![node_hash(&l[0], &l[1])]
        );
        assert_eq!(inclusion_path(&l, 0).unwrap(), vec![l[1], l[2]]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn incremental_root_equals_recursive_definition(n in 0usize..300) {
            let l = leaves(n);
            let mut b = MerkleBuilder::new();
            for (i, leaf) in l.iter().enumerate() {
                b.push(*leaf);
                prop_assert_eq!(b.root(), naive_root(&l[..=i]));
            }
            prop_assert_eq!(b.root(), naive_root(&l));
        }

        #[test]
        fn every_inclusion_proof_verifies(n in 1usize..130) {
            let l = leaves(n);
            let root = naive_root(&l);
            for i in 0..n {
                let path = inclusion_path(&l, i).unwrap();
                prop_assert_eq!(root_from_path(l[i], i as u64, n as u64, &path), Some(root));
                // The same path proves nothing for another leaf.
                let other = leaf_hash(b"not in the tree");
                prop_assert_ne!(root_from_path(other, i as u64, n as u64, &path), Some(root));
            }
            prop_assert_eq!(root_from_path(l[0], n as u64, n as u64, &[]), None);
        }
    }
}
