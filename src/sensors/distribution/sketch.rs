//! The sketches a column accumulator keeps: a HyperLogLog for distinct counts, a mergeable
//! uniform bottom-k sample, and the hashes and generator they draw on. They know
//! nothing about columns, Arrow or Iceberg.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// HyperLogLog precision: 2^14 registers, standard error 1.04 / sqrt(16384) = 0.81 %.
pub const HLL_PRECISION: u32 = 14;
/// Relative standard error of [`HyperLogLog::estimate`] (1.04 / sqrt(2^14)).
pub const HLL_STANDARD_ERROR: f64 = 0.008125;

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
pub fn mix64(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// A fast 64-bit hash of bytes (8-byte words multiplied and rotated, then [`mix64`]).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x87c3_7b91_1142_53d5).rotate_left(31);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x4cf5_ad43_2745_937f).rotate_left(29);
    }
    mix64(hash)
}

/// HyperLogLog with 2^14 six-bit registers (kept as bytes) and linear counting for small
/// cardinalities; relative standard error [`HLL_STANDARD_ERROR`].
#[derive(Clone, Debug)]
pub struct HyperLogLog {
    registers: Vec<u8>,
}

impl Default for HyperLogLog {
    fn default() -> Self {
        HyperLogLog::new()
    }
}

impl HyperLogLog {
    pub fn new() -> HyperLogLog {
        HyperLogLog { registers: vec![0; 1 << HLL_PRECISION] }
    }

    /// Adds a well-mixed 64-bit hash.
    pub fn insert(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_PRECISION)) as usize;
        let rest = (hash << HLL_PRECISION) | (1 << (HLL_PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    pub fn merge(&mut self, other: &HyperLogLog) {
        for (mine, theirs) in self.registers.iter_mut().zip(&other.registers) {
            *mine = (*mine).max(*theirs);
        }
    }

    pub fn estimate(&self) -> f64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let (sum, zeros) = self.registers.iter().fold((0.0f64, 0usize), |(sum, zeros), &register| {
            (sum + 2f64.powi(-i32::from(register)), zeros + usize::from(register == 0))
        });
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw }
    }
}

/// A uniform sample without replacement of at most `capacity` items: each item gets a random
/// key and the `capacity` smallest keys are kept, so two samples merge by keeping the smallest
/// keys of both. Once full, the number of items to skip before the next one enters is drawn
/// from the geometric distribution, so the cost per skipped item is a decrement.
#[derive(Clone, Debug)]
pub struct BottomK<T> {
    capacity: usize,
    heap: BinaryHeap<Keyed<T>>,
    rng: SplitMix64,
    skip: u64,
}

#[derive(Clone, Debug)]
struct Keyed<T> {
    key: u64,
    item: T,
}

impl<T> PartialEq for Keyed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<T> Eq for Keyed<T> {}
impl<T> PartialOrd for Keyed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Keyed<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl<T> BottomK<T> {
    pub fn new(capacity: usize, seed: u64) -> BottomK<T> {
        BottomK { capacity, heap: BinaryHeap::new(), rng: SplitMix64(seed), skip: 0 }
    }

    /// Offers the next item; `make` runs only when the item enters the sample.
    pub fn offer_with(&mut self, make: impl FnOnce() -> T) {
        if self.capacity == 0 {
            return;
        }
        if self.heap.len() < self.capacity {
            let key = self.rng.next();
            self.heap.push(Keyed { key, item: make() });
            if self.heap.len() == self.capacity {
                self.draw_skip();
            }
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        // This item's key is below the current largest one: uniform in [0, threshold).
        let threshold = self.threshold();
        let key = ((self.rng.next() as u128 * threshold as u128) >> 64) as u64;
        if let Some(mut largest) = self.heap.peek_mut() {
            *largest = Keyed { key, item: make() };
        }
        self.draw_skip();
    }

    fn threshold(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |largest| largest.key)
    }

    /// Items until one draws a key below the threshold: Geometric(threshold / 2^64).
    fn draw_skip(&mut self) {
        let probability = self.threshold() as f64 / 2f64.powi(64);
        if probability >= 1.0 {
            self.skip = 0;
            return;
        }
        if probability <= 0.0 {
            self.skip = u64::MAX;
            return;
        }
        let uniform = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let uniform = uniform.max(f64::MIN_POSITIVE);
        let skip = (uniform.ln() / (-probability).ln_1p()).floor();
        self.skip = if skip.is_finite() && skip < u64::MAX as f64 { skip as u64 } else { u64::MAX };
    }

    pub fn merge(&mut self, other: BottomK<T>) {
        for entry in other.heap {
            if self.heap.len() < self.capacity {
                self.heap.push(entry);
            } else if entry.key < self.threshold()
                && let Some(mut largest) = self.heap.peek_mut()
            {
                *largest = entry;
            }
        }
        if self.heap.len() == self.capacity {
            self.draw_skip();
        }
    }

    /// A uniform sample of at most `count` of the items (those with the smallest keys), in no
    /// particular order; linear time instead of a sort.
    pub fn into_first(self, count: usize) -> Vec<T> {
        let mut entries = self.heap.into_vec();
        if entries.len() > count {
            entries.select_nth_unstable_by_key(count, |entry| entry.key);
            entries.truncate(count);
        }
        entries.into_iter().map(|entry| entry.item).collect()
    }

    /// The sampled items, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|entry| &entry.item)
    }
}

/// SplitMix64: a small, fast, seedable generator (good enough for sampling keys).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_stays_within_three_standard_errors() {
        for (cardinality, seed) in [(1_000u64, 1u64), (50_000, 2), (400_000, 3)] {
            let mut sketch = HyperLogLog::new();
            for value in 0..cardinality {
                sketch.insert(mix64(value.wrapping_mul(seed).wrapping_add(seed << 40)));
            }
            let error = (sketch.estimate() - cardinality as f64).abs() / cardinality as f64;
            assert!(error <= 3.0 * HLL_STANDARD_ERROR, "{cardinality}: {error}");
        }
    }

    #[test]
    fn bottom_k_is_uniform() {
        // Each of 100 positions should enter a 10-item sample of a 100-item stream 10% of the time.
        let mut hits = vec![0u32; 100];
        for seed in 0..4000u64 {
            let mut sample = BottomK::new(10, mix64(seed));
            for index in 0..100usize {
                sample.offer_with(|| index);
            }
            for index in sample.into_first(usize::MAX) {
                hits[index] += 1;
            }
        }
        // Expected 400 per position, binomial sd about 19.
        for (position, &count) in hits.iter().enumerate() {
            assert!((300..=500).contains(&count), "position {position}: {count}");
        }
    }
}
