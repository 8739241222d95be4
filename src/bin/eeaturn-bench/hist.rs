//! A fixed-size log-linear latency histogram: 64 buckets per power of two (about 1.6 %
//! relative error), no allocation after creation, any `u64` value.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for every `u64`.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Counts of values (nanoseconds here) in log-linear buckets.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Histogram {
    /// Creates an empty histogram.
    pub(crate) fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }

    /// Records one value.
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value recorded in `other`.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Returns how many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// Returns the largest value recorded.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Returns the value at quantile `q` (0..=1): the middle of the bucket holding it, or 0
    /// when the histogram is empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bounds(i);
                return (lo + width / 2).min(self.max);
            }
        }
        self.max
    }
}

/// Returns the bucket of `v`.
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// Returns the lowest value of bucket `i` and its width.
fn bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, 1);
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    let shift = exp - SUB_BITS;
    ((SUB as u64 + sub) << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for v in [
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456,
            9_999_999,
            u64::MAX,
        ] {
            let (lo, w) = bounds(index(v));
            assert!(lo <= v && v - lo < w, "{v}: [{lo}, +{w})");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.max(), 1_000_000);
    }
}
