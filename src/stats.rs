//! The crate's one percentile: nearest rank (the smallest value with at
//! least p% of the values at or below it), so bench reports, run summaries,
//! timing prints and the audio delay estimate agree on what "p95" means.
//! Histogram quantiles, which must interpolate, are in [`crate::metrics`].

/// Index of the nearest-rank `p` percentile (`p` in 0..=100) in an
/// ascending slice of `len` values; `None` when empty.
pub fn nearest_rank(len: usize, p: f64) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let rank = ((p / 100.0) * len as f64).ceil() as usize;
    Some(rank.clamp(1, len) - 1)
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; 0 when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    nearest_rank(sorted.len(), p).map_or(0.0, |i| sorted[i])
}

/// Median of unsorted values (nearest rank: the lower middle of an even
/// count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, -5.0), 1.0);
        assert_eq!(percentile(&v, 250.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        // Ten values: p95 is the 10th, p90 the 9th, the median the 5th.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 95.0), 10.0);
        assert_eq!(percentile(&ten, 90.0), 9.0);
        assert_eq!(median(ten.iter().rev().copied().collect()), 5.0);
        assert_eq!(nearest_rank(4, 25.0), Some(0));
        assert_eq!(nearest_rank(0, 25.0), None);
    }
}
