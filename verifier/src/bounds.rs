//! Threshold comparisons that fail closed (DESIGN §4): each is false for NaN,
//! so a check written `if !at_most(z, limit) { reject }` rejects a NaN figure.

/// `value <= limit`; false when either is NaN.
pub fn at_most(value: f64, limit: f64) -> bool {
    value <= limit
}

/// `value >= limit`; false when either is NaN.
pub fn at_least(value: f64, limit: f64) -> bool {
    value >= limit
}

/// `value > 0`; false for NaN.
pub fn positive(value: f64) -> bool {
    value > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_passes_nothing() {
        assert!(!at_most(f64::NAN, 1.0) && !at_least(f64::NAN, 0.0) && !positive(f64::NAN));
        assert!(!at_most(0.5, f64::NAN), "a NaN limit admits nothing either");
        assert!(at_most(1.0, 1.0) && at_least(1.0, 1.0) && positive(1e-300) && !positive(0.0));
    }
}
