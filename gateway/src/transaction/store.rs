//! Storage for live transactions: a generational slab (stable, cheap ids)
//! and hash indexes from a 64-bit key hash to the ids sharing it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A slab index plus the generation that makes stale ids miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TxId {
    pub idx: u32,
    pub generation: u32,
}

#[derive(Debug)]
struct SlabSlot<T> {
    generation: u32,
    value: Option<T>,
}

/// A generational slab: freed slots are reused with a bumped generation.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<SlabSlot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Live values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Stores `value`; `None` only if 2^32 slots are in use.
    pub fn insert(&mut self, value: T) -> Option<TxId> {
        if let Some(idx) = self.free.pop() {
            let slot = self.slots.get_mut(idx as usize)?;
            slot.generation = slot.generation.wrapping_add(1);
            slot.value = Some(value);
            self.len += 1;
            return Some(TxId {
                idx,
                generation: slot.generation,
            });
        }
        let idx = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(SlabSlot {
            generation: 0,
            value: Some(value),
        });
        self.len += 1;
        Some(TxId { idx, generation: 0 })
    }

    /// The value behind a live id.
    pub fn get(&self, id: TxId) -> Option<&T> {
        self.slots
            .get(id.idx as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_ref())
    }

    /// The value behind a live id, mutably.
    pub fn get_mut(&mut self, id: TxId) -> Option<&mut T> {
        self.slots
            .get_mut(id.idx as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.value.as_mut())
    }

    /// Removes and returns the value behind a live id.
    pub fn remove(&mut self, id: TxId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.idx as usize)
            .filter(|s| s.generation == id.generation)?;
        let value = slot.value.take()?;
        self.free.push(id.idx);
        self.len -= 1;
        Some(value)
    }
}

/// Passes a precomputed 64-bit hash through (the keys are already hashed
/// with a randomly seeded SipHash).
#[derive(Debug, Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
enum Bucket {
    One(TxId),
    Many(Vec<TxId>),
}

/// Key hash → ids. Collisions are resolved by the caller comparing the full
/// key stored in each candidate transaction.
#[derive(Debug, Default)]
pub(crate) struct Index {
    map: HashMap<u64, Bucket, BuildHasherDefault<IdentityHasher>>,
}

impl Index {
    /// Adds `id` under `hash`.
    pub fn insert(&mut self, hash: u64, id: TxId) {
        match self.map.get_mut(&hash) {
            None => {
                self.map.insert(hash, Bucket::One(id));
            }
            Some(Bucket::Many(ids)) => ids.push(id),
            Some(bucket @ Bucket::One(_)) => {
                if let Bucket::One(old) = *bucket {
                    *bucket = Bucket::Many(vec![old, id]);
                }
            }
        }
    }

    /// Removes `id` from under `hash`.
    pub fn remove(&mut self, hash: u64, id: TxId) {
        let empty = match self.map.get_mut(&hash) {
            None => false,
            Some(Bucket::One(old)) => *old == id,
            Some(Bucket::Many(ids)) => {
                ids.retain(|x| *x != id);
                ids.is_empty()
            }
        };
        if empty {
            self.map.remove(&hash);
        }
    }

    /// The ids filed under `hash`.
    pub fn candidates(&self, hash: u64) -> &[TxId] {
        match self.map.get(&hash) {
            None => &[],
            Some(Bucket::One(id)) => std::slice::from_ref(id),
            Some(Bucket::Many(ids)) => ids,
        }
    }

    /// Number of distinct hashes.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_generations() {
        let mut s = Slab::default();
        let a = s.insert(1).unwrap();
        assert_eq!(s.remove(a), Some(1));
        let b = s.insert(2).unwrap();
        assert_eq!(a.idx, b.idx);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&2));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn index_collisions() {
        let mut i = Index::default();
        let a = TxId {
            idx: 1,
            generation: 0,
        };
        let b = TxId {
            idx: 2,
            generation: 0,
        };
        i.insert(7, a);
        i.insert(7, b);
        assert_eq!(i.candidates(7), &[a, b]);
        i.remove(7, a);
        assert_eq!(i.candidates(7), &[b]);
        i.remove(7, b);
        assert!(i.candidates(7).is_empty());
        assert_eq!(i.len(), 0);
    }
}
