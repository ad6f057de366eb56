//! One column's running profile over Arrow arrays: counts, moments, min/max, string lengths, a
//! HyperLogLog sketch for distinct counts and a uniform bottom-k sample for quantiles and drift
//! (the sketches are `sketch`'s). Accumulators of different files merge, so files are profiled
//! in parallel. No IO, no Iceberg.

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

use super::sketch::{BottomK, HyperLogLog, hash_bytes, mix64};

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
}
