//! Summary statistics over per-artifact scores and latencies.

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
    }
}
