//! Summary statistics over per-artifact scores and latencies, and the
//! process's peak memory.

/// The `q`-quantile (0..=1) by linear interpolation; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

/// Area under the ROC curve for telling `positives` (fraud) from `negatives`
/// (honest) by a score where higher means more suspicious: the probability
/// that a random positive scores above a random negative, ties counting half.
pub fn auc(negatives: &[f64], positives: &[f64]) -> Option<f64> {
    if negatives.is_empty() || positives.is_empty() {
        return None;
    }
    let mut sorted = negatives.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut wins = 0.0;
    for &p in positives {
        let below = sorted.partition_point(|&n| n < p);
        let not_above = sorted.partition_point(|&n| n <= p);
        wins += below as f64 + 0.5 * (not_above - below) as f64;
    }
    Some(wins / (negatives.len() * positives.len()) as f64)
}

/// Fraction of `items` for which `hit` holds; `None` when empty.
pub fn rate<T>(items: &[T], hit: impl Fn(&T) -> bool) -> Option<f64> {
    if items.is_empty() {
        return None;
    }
    Some(items.iter().filter(|item| hit(item)).count() as f64 / items.len() as f64)
}

/// With no false positive among `n` honest samples, the one-sided 95 %
/// upper bound on the false-positive rate (the rule of three).
pub fn zero_failure_bound(n: usize) -> Option<f64> {
    (n > 0).then(|| 3.0 / n as f64)
}

/// The one-sided 95 % upper bound on a rate with `failures` in `n`
/// (Clopper–Pearson: the rate at which `failures` or fewer would be seen 5 %
/// of the time); 3/n, the rule of three, is its approximation at 0.
pub fn upper_bound_95(failures: usize, n: usize) -> Option<f64> {
    if n == 0 {
        return None;
    }
    if failures >= n {
        return Some(1.0);
    }
    // P(X ≤ failures) for X ~ Binomial(n, p), in log space.
    let at_most = |p: f64| -> f64 {
        let mut log_term = n as f64 * (1.0 - p).ln();
        let mut total = log_term.exp();
        for i in 0..failures {
            log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + p.ln() - (1.0 - p).ln();
            total += log_term.exp();
        }
        total
    };
    let (mut low, mut high) = (0.0, 1.0);
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if at_most(mid) > 0.05 {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(high)
}

/// The process's peak resident set (VmHWM), Linux only.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts [`peak_rss_mib`] over from the current resident set (Linux:
/// `/proc/self/clear_refs`), so that runs in one process have a peak each.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let values = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&values, 0.5), Some(2.5));
        assert_eq!(quantile(&values, 1.0), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn auc_is_one_when_separated_half_when_identical() {
        assert_eq!(auc(&[0.1, 0.2], &[0.3, 0.4]), Some(1.0));
        assert_eq!(auc(&[0.3, 0.4], &[0.1, 0.2]), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5], &[0.5]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.3], &[0.2]), Some(0.5));
    }

    #[test]
    fn rates_and_bounds() {
        assert_eq!(rate(&[1, 2, 3, 4], |&x| x > 2), Some(0.5));
        assert_eq!(rate::<u8>(&[], |_| true), None);
        assert_eq!(zero_failure_bound(300), Some(0.01));
        // Clopper–Pearson at 0 failures is 1 - 0.05^(1/n), just under 3/n.
        let bound = upper_bound_95(0, 3000).unwrap();
        assert!((bound - (1.0 - 0.05f64.powf(1.0 / 3000.0))).abs() < 1e-9, "{bound}");
        // 1 failure in 3000: 4.74/n (the tabulated Poisson factor).
        let bound = upper_bound_95(1, 3000).unwrap();
        assert!((bound * 3000.0 - 4.74).abs() < 0.01, "{bound}");
        assert_eq!(upper_bound_95(5, 0), None);
    }
}
