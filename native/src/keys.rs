//! `Keys`: the sorted set of index keys (`ledger::index_key`) behind every threshold and
//! safety-edge list: the same operations as a `BTreeSet<i128>` (the set it replaced), laid
//! out as a list of sorted chunks of up to `2 * LOAD` keys with each chunk's last key in
//! a small array of its own (the layout of Python's `sortedcontainers.SortedList`).
//!
//! Why: the lists of a 100k-account ledger hold 50-75k keys each, and an insert or remove
//! in a B-tree of 11-key nodes is a walk through four or five nodes that are rarely in
//! cache. Here the array of chunk maxima (a few KB per list) stays cached, and the walk is
//! one binary search in one contiguous chunk plus a short memmove.

/// Keys per chunk after a split; a chunk splits when it reaches `2 * LOAD` keys and is
/// merged into a neighbour when it falls under `LOAD / 4`.
const LOAD: usize = 64;

#[derive(Default, Clone, Debug)]
pub struct Keys {
    /// Sorted, non-empty, and every key of a chunk is below every key of the next.
    chunks: Vec<Vec<i128>>,
    /// The last (largest) key of each chunk.
    maxes: Vec<i128>,
    len: usize,
}

impl Keys {
    pub fn new() -> Self {
        Keys::default()
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `key` if it is present (the first whose maximum is >= key).
    #[inline]
    fn chunk_for(&self, key: i128) -> usize {
        self.maxes.partition_point(|&max| max < key)
    }

    pub fn contains(&self, key: &i128) -> bool {
        let at = self.chunk_for(*key);
        at < self.chunks.len() && find(&self.chunks[at], *key).is_ok()
    }

    /// Start loading the chunk where `key` belongs into cache, so that an `insert` or
    /// `remove` of it after some other work does not wait for memory as long.
    #[inline]
    pub fn prefetch(&self, key: i128) {
        let at = self.chunk_for(key).min(self.chunks.len().saturating_sub(1));
        if let Some(chunk) = self.chunks.get(at) {
            let bytes = std::mem::size_of_val(chunk.as_slice());
            let start = chunk.as_ptr().cast::<u8>();
            for offset in (0..bytes).step_by(64) {
                // SAFETY: the address lies inside the chunk's allocation.
                prefetch(unsafe { start.add(offset) });
            }
        }
    }

    /// Insert `key`; false if it was present.
    pub fn insert(&mut self, key: i128) -> bool {
        if self.chunks.is_empty() {
            let mut chunk = Vec::with_capacity(LOAD);
            chunk.push(key);
            self.chunks.push(chunk);
            self.maxes.push(key);
            self.len = 1;
            return true;
        }
        let at = self.chunk_for(key).min(self.chunks.len() - 1);
        let chunk = &mut self.chunks[at];
        let Err(pos) = find(chunk, key) else { return false };
        chunk.insert(pos, key);
        if pos + 1 == chunk.len() {
            self.maxes[at] = key;
        }
        self.len += 1;
        if chunk.len() >= 2 * LOAD {
            let upper = chunk.split_off(LOAD);
            self.maxes[at] = *chunk.last().expect("LOAD > 0");
            self.maxes.insert(at + 1, *upper.last().expect("LOAD > 0"));
            self.chunks.insert(at + 1, upper);
        }
        true
    }

    /// Remove `key`; false if it was absent.
    pub fn remove(&mut self, key: &i128) -> bool {
        let at = self.chunk_for(*key);
        if at == self.chunks.len() {
            return false;
        }
        let chunk = &mut self.chunks[at];
        let Ok(pos) = find(chunk, *key) else { return false };
        chunk.remove(pos);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(at);
            self.maxes.remove(at);
            return true;
        }
        if pos == chunk.len() {
            self.maxes[at] = *chunk.last().expect("not empty");
        }
        if chunk.len() < LOAD / 4 && self.chunks.len() > 1 {
            // Merge with a neighbour (the later chunk into the earlier one).
            let first = if at + 1 < self.chunks.len() { at } else { at - 1 };
            let later = self.chunks.remove(first + 1);
            self.maxes.remove(first + 1);
            let merged = &mut self.chunks[first];
            merged.extend_from_slice(&later);
            self.maxes[first] = *merged.last().expect("not empty");
            if merged.len() >= 2 * LOAD {
                let upper = merged.split_off(merged.len() / 2);
                self.maxes[first] = *merged.last().expect("not empty");
                self.maxes.insert(first + 1, *upper.last().expect("not empty"));
                self.chunks.insert(first + 1, upper);
            }
        }
        true
    }

    /// Every key in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = &i128> + '_ {
        self.chunks.iter().flatten()
    }

    /// The keys >= `low`, ascending.
    pub fn range_from(&self, low: i128) -> impl Iterator<Item = &i128> + '_ {
        let at = self.chunk_for(low);
        let start = self.chunks.get(at).map_or(0, |chunk| chunk.partition_point(|&k| k < low));
        self.chunks[at.min(self.chunks.len())..].iter().enumerate().flat_map(move |(i, chunk)| {
            let skip = if i == 0 { start } else { 0 };
            chunk[skip..].iter()
        })
    }

    /// The keys < `high`, ascending.
    pub fn range_below(&self, high: i128) -> impl Iterator<Item = &i128> + '_ {
        self.iter().take_while(move |&&k| k < high)
    }
}

/// A hint to the CPU to load the cache line at `address` (nothing elsewhere).
#[inline(always)]
pub fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(address.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// `binary_search` in a chunk, as a linear scan: a chunk is rarely in cache, and a scan's
/// loads do not wait on each other as a binary search's do (nor do the hardware's
/// prefetches of the next lines), so it finishes sooner; the memmove of an insert or
/// remove then finds the lines cached.
#[inline]
fn find(chunk: &[i128], key: i128) -> Result<usize, usize> {
    let pos = chunk.iter().position(|&k| k >= key).unwrap_or(chunk.len());
    if pos < chunk.len() && chunk[pos] == key {
        Ok(pos)
    } else {
        Err(pos)
    }
}

impl FromIterator<i128> for Keys {
    /// Bulk load (sorts and drops repeats, as collecting a `BTreeSet` does).
    fn from_iter<I: IntoIterator<Item = i128>>(iter: I) -> Self {
        let mut all: Vec<i128> = iter.into_iter().collect();
        all.sort_unstable();
        all.dedup();
        let len = all.len();
        let chunks: Vec<Vec<i128>> = all.chunks(LOAD).map(|chunk| chunk.to_vec()).collect();
        let maxes = chunks.iter().map(|chunk| *chunk.last().expect("not empty")).collect();
        Keys { chunks, maxes, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn check(keys: &Keys, model: &BTreeSet<i128>) {
        assert_eq!(keys.len(), model.len());
        assert!(keys.iter().copied().eq(model.iter().copied()));
        for (chunk, max) in keys.chunks.iter().zip(&keys.maxes) {
            assert!(!chunk.is_empty() && chunk.len() < 2 * LOAD);
            assert_eq!(chunk.last(), Some(max));
        }
        assert_eq!(keys.chunks.len(), keys.maxes.len());
    }

    #[test]
    fn behaves_as_a_btreeset() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..6 {
            let span = [50u64, 400, 5_000, 100_000, 3, 1 << 40][round];
            let mut keys = Keys::new();
            let mut model = BTreeSet::new();
            for step in 0..30_000 {
                let key = (next() % span) as i128 - (span / 2) as i128;
                // Phases of mostly inserting then mostly removing, to grow and shrink.
                let insert = next() % 10 < if (step / 5_000) % 2 == 0 { 7 } else { 3 };
                if insert {
                    assert_eq!(keys.insert(key), model.insert(key));
                } else {
                    assert_eq!(keys.remove(&key), model.remove(&key));
                }
                assert_eq!(keys.contains(&key), model.contains(&key));
                if step % 997 == 0 {
                    check(&keys, &model);
                    for _ in 0..20 {
                        let bound = (next() % (span + 4)) as i128 - (span / 2) as i128 - 2;
                        assert!(keys.range_from(bound).copied().eq(model.range(bound..).copied()));
                        assert!(keys.range_below(bound).copied().eq(model.range(..bound).copied()));
                    }
                }
            }
            check(&keys, &model);
            let rebuilt: Keys = model.iter().rev().copied().chain(model.iter().copied()).collect();
            check(&rebuilt, &model);
        }
        let empty = Keys::new();
        assert_eq!(empty.range_from(0).count() + empty.range_below(0).count(), 0);
        assert!(!empty.contains(&0));
    }
}
