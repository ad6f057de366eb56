//! One column's running profile over Arrow arrays: counts, moments, min/max, string lengths, a
//! HyperLogLog sketch for distinct counts and a uniform bottom-k sample for quantiles and drift.
//! Accumulators of different files merge, so files are profiled in parallel. No IO, no Iceberg.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

/// HyperLogLog precision: 2^14 registers, standard error 1.04 / sqrt(16384) = 0.81 %.
pub const HLL_PRECISION: u32 = 14;
/// Relative standard error of [`HyperLogLog::estimate`] (1.04 / sqrt(2^14)).
pub const HLL_STANDARD_ERROR: f64 = 0.008125;
/// Strings kept in a sample are cut to this many bytes (at a character boundary).
const SAMPLE_STRING_BYTES: usize = 200;

/// What a column's values are, for the statistics that apply to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Integers, floats, decimals, dates, times, timestamps, booleans: read as `f64`.
    Numeric,
    Text,
    /// Binary, nested, ...: only row and null counts.
    Other,
}

/// Which parts of the profile are wanted (the rest is not computed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub distinct: bool,
    /// Sample capacity (0: no sample).
    pub sample: usize,
}

/// The profile of one column over the rows seen so far.
#[derive(Clone, Debug)]
pub struct ColumnAccumulator {
    pub kind: ValueKind,
    pub rows: u64,
    pub nulls: u64,
    pub nans: u64,
    pub zeros: u64,
    /// Non-null, non-NaN values (numeric) or non-null strings (text).
    pub count: u64,
    pub sum: f64,
    pub mean: f64,
    /// Sum of squared deviations from `mean` (Chan's parallel update).
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub empty: u64,
    pub length_sum: u64,
    pub min_length: u64,
    pub max_length: u64,
    pub distinct: Option<HyperLogLog>,
    pub numbers: Option<BottomK<f64>>,
    pub strings: Option<BottomK<String>>,
}

impl ColumnAccumulator {
    /// `seed` makes the sample reproducible (e.g. a hash of the file path).
    pub fn new(kind: ValueKind, wanted: Wanted, seed: u64) -> ColumnAccumulator {
        ColumnAccumulator {
            kind,
            rows: 0,
            nulls: 0,
            nans: 0,
            zeros: 0,
            count: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            empty: 0,
            length_sum: 0,
            min_length: u64::MAX,
            max_length: 0,
            distinct: (wanted.distinct && kind != ValueKind::Other).then(HyperLogLog::new),
            numbers: (wanted.sample > 0 && kind == ValueKind::Numeric).then(|| BottomK::new(wanted.sample, seed)),
            strings: (wanted.sample > 0 && kind == ValueKind::Text).then(|| BottomK::new(wanted.sample, seed)),
        }
    }

    /// Adds one Arrow array of this column.
    pub fn add(&mut self, array: &dyn Array) -> Result<(), ArrowError> {
        self.rows += array.len() as u64;
        self.nulls += array.logical_null_count() as u64;
        match self.kind {
            ValueKind::Numeric => {
                let numbers = as_f64(array)?;
                self.add_numbers(numbers.values(), numbers.nulls());
            }
            ValueKind::Text => match array.data_type() {
                DataType::Utf8 => self.add_strings(array.as_string::<i32>().iter()),
                DataType::LargeUtf8 => self.add_strings(array.as_string::<i64>().iter()),
                DataType::Utf8View => self.add_strings(array.as_string_view().iter()),
                other => {
                    return Err(ArrowError::CastError(format!("expected a string array, found {other}")));
                }
            },
            ValueKind::Other => {}
        }
        Ok(())
    }

    fn add_numbers(&mut self, values: &[f64], nulls: Option<&NullBuffer>) {
        let mut count = 0u64;
        let mut sum = 0.0f64;
        let (mut min, mut max) = (self.min, self.max);
        let mut visit = |value: f64, this: &mut ColumnAccumulator| {
            if value.is_nan() {
                this.nans += 1;
                if let Some(distinct) = &mut this.distinct {
                    distinct.insert(mix64(f64::NAN.to_bits()));
                }
                return;
            }
            count += 1;
            sum += value;
            min = min.min(value);
            max = max.max(value);
            if value == 0.0 {
                this.zeros += 1;
            }
            if let Some(distinct) = &mut this.distinct {
                // -0.0 and 0.0 are one value.
                distinct.insert(mix64((value + 0.0).to_bits()));
            }
            if let Some(sample) = &mut this.numbers {
                sample.offer_with(|| value);
            }
        };
        match nulls {
            Some(nulls) if nulls.null_count() > 0 => {
                for index in nulls.valid_indices() {
                    visit(values[index], self);
                }
            }
            _ => {
                for &value in values {
                    visit(value, self);
                }
            }
        }
        self.min = min;
        self.max = max;
        if count == 0 {
            return;
        }
        let batch_mean = sum / count as f64;
        let squared = |value: f64| if value.is_nan() { 0.0 } else { (value - batch_mean).powi(2) };
        let batch_m2: f64 = match nulls {
            Some(nulls) if nulls.null_count() > 0 => nulls.valid_indices().map(|index| squared(values[index])).sum(),
            _ => values.iter().map(|&value| squared(value)).sum(),
        };
        self.merge_moments(count, sum, batch_mean, batch_m2);
    }

    fn merge_moments(&mut self, count: u64, sum: f64, mean: f64, m2: f64) {
        if count == 0 {
            return;
        }
        let total = self.count + count;
        let delta = mean - self.mean;
        self.m2 += m2 + delta * delta * (self.count as f64) * (count as f64) / total as f64;
        self.mean += delta * count as f64 / total as f64;
        self.count = total;
        self.sum += sum;
    }

    fn add_strings<'a>(&mut self, values: impl Iterator<Item = Option<&'a str>>) {
        for value in values.flatten() {
            let length = if value.is_ascii() { value.len() } else { value.chars().count() } as u64;
            self.count += 1;
            self.length_sum += length;
            self.min_length = self.min_length.min(length);
            self.max_length = self.max_length.max(length);
            if length == 0 {
                self.empty += 1;
            }
            if let Some(distinct) = &mut self.distinct {
                distinct.insert(hash_bytes(value.as_bytes()));
            }
            if let Some(sample) = &mut self.strings {
                sample.offer_with(|| truncate(value, SAMPLE_STRING_BYTES).to_string());
            }
        }
    }

    /// Folds `other` (the same column over other rows) into `self`.
    pub fn merge(&mut self, other: ColumnAccumulator) {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.nans += other.nans;
        self.zeros += other.zeros;
        if self.kind == ValueKind::Text {
            self.count += other.count;
        } else {
            self.merge_moments(other.count, other.sum, other.mean, other.m2);
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.empty += other.empty;
        self.length_sum += other.length_sum;
        self.min_length = self.min_length.min(other.min_length);
        self.max_length = self.max_length.max(other.max_length);
        if let (Some(mine), Some(theirs)) = (&mut self.distinct, other.distinct) {
            mine.merge(&theirs);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.numbers, other.numbers) {
            mine.merge(theirs);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.strings, other.strings) {
            mine.merge(theirs);
        }
    }

    /// Sample (n - 1) standard deviation; `None` below two values.
    pub fn stddev(&self) -> Option<f64> {
        (self.count >= 2).then(|| (self.m2 / (self.count - 1) as f64).sqrt())
    }
}

/// The values of a numeric array as `f64` (dates as days, timestamps in their unit, booleans 0/1).
fn as_f64(array: &dyn Array) -> Result<Float64Array, ArrowError> {
    let as_integers = match array.data_type() {
        DataType::Float64 => return Ok(array.as_primitive().clone()),
        DataType::Date32 | DataType::Time32(_) => Some(DataType::Int32),
        DataType::Date64 | DataType::Time64(_) | DataType::Timestamp(_, _) | DataType::Duration(_) => {
            Some(DataType::Int64)
        }
        _ => None,
    };
    let converted = match as_integers {
        Some(integer) => cast(&cast(array, &integer)?, &DataType::Float64)?,
        None => cast(array, &DataType::Float64)?,
    };
    Ok(converted.as_primitive().clone())
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

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
    use datafusion::arrow::array::{Int32Array, StringArray};

    #[test]
    fn numeric_moments_match_two_pass_over_merged_batches() {
        let values: Vec<Option<f64>> = (0..1000)
            .map(|index| match index % 7 {
                0 => None,
                3 => Some(f64::NAN),
                _ => Some((index as f64 * 0.37).sin() * 100.0 + 1e6),
            })
            .collect();
        let wanted = Wanted { distinct: true, sample: 5000 };
        let mut left = ColumnAccumulator::new(ValueKind::Numeric, wanted, 1);
        let mut right = ColumnAccumulator::new(ValueKind::Numeric, wanted, 2);
        left.add(&Float64Array::from(values[..300].to_vec())).unwrap();
        right.add(&Float64Array::from(values[300..700].to_vec())).unwrap();
        right.add(&Float64Array::from(values[700..].to_vec())).unwrap();
        left.merge(right);
        let finite: Vec<f64> = values.iter().flatten().copied().filter(|v| !v.is_nan()).collect();
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (finite.len() - 1) as f64;
        assert_eq!(left.rows, 1000);
        assert_eq!(left.nulls, values.iter().filter(|v| v.is_none()).count() as u64);
        assert_eq!(left.nans, values.iter().flatten().filter(|v| v.is_nan()).count() as u64);
        assert_eq!(left.count, finite.len() as u64);
        assert!((left.mean - mean).abs() < 1e-9 * mean.abs());
        assert!((left.stddev().unwrap() - variance.sqrt()).abs() < 1e-9 * variance.sqrt());
        // The sample holds every value when the capacity allows: quantiles are exact.
        let mut sample = left.numbers.unwrap().into_first(usize::MAX);
        assert_eq!(sample.len(), finite.len());
        sample.sort_by(f64::total_cmp);
        let mut sorted = finite.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sample, sorted);
        let distinct = left.distinct.unwrap().estimate();
        let exact = finite.len() as f64 + 1.0; // every sin value differs, plus NaN
        assert!((distinct - exact).abs() <= 0.03 * exact, "{distinct} vs {exact}");
    }

    #[test]
    fn strings_count_characters_and_empties() {
        let array = StringArray::from(vec![Some(""), Some("héllo"), None, Some("ab"), Some("")]);
        let mut accumulator = ColumnAccumulator::new(ValueKind::Text, Wanted { distinct: true, sample: 10 }, 0);
        accumulator.add(&array).unwrap();
        assert_eq!((accumulator.rows, accumulator.nulls, accumulator.count), (5, 1, 4));
        assert_eq!((accumulator.empty, accumulator.length_sum), (2, 7));
        assert_eq!((accumulator.min_length, accumulator.max_length), (0, 5));
        assert!((accumulator.distinct.unwrap().estimate() - 3.0).abs() < 0.01);
    }

    #[test]
    fn integers_are_read_as_numbers() {
        let mut accumulator = ColumnAccumulator::new(ValueKind::Numeric, Wanted::default(), 0);
        accumulator.add(&Int32Array::from(vec![Some(1), None, Some(0), Some(5)])).unwrap();
        assert_eq!((accumulator.count, accumulator.zeros, accumulator.sum), (3, 1, 6.0));
        assert_eq!((accumulator.min, accumulator.max), (0.0, 5.0));
    }

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
