//! A token bucket: the one rate limit the node uses (JSON-RPC calls and
//! bytes, sync requests per peer), refilled continuously with one second of
//! burst.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    per_s: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// Full: a new client may use one second of its rate at once.
    pub fn new(per_s: u32) -> Self {
        Self::new_at(per_s, Instant::now())
    }

    pub fn new_at(per_s: u32, now: Instant) -> Self {
        Self { per_s: f64::from(per_s), tokens: f64::from(per_s), refilled: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.per_s);
        self.refilled = now;
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1.0, now)
    }

    /// Takes `cost` tokens if there are that many. A cost above the burst
    /// is allowed from a full bucket (which it leaves in debt), so one
    /// request larger than a second's allowance is slow, not impossible.
    pub fn try_take_n(&mut self, cost: f64, now: Instant) -> bool {
        // NaN and negative costs fail closed.
        if cost.is_nan() || cost < 0.0 {
            return false;
        }
        self.refill(now);
        if self.tokens >= cost.min(self.per_s) {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_one_second_of_burst_then_refills_at_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(10, start);
        assert_eq!((0..20).filter(|_| bucket.try_take(start)).count(), 10);
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(bucket.try_take(start + Duration::from_millis(160)));
        // A long idle period refills to the burst, not beyond it.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.try_take(later)).count(), 10);
    }

    #[test]
    fn a_cost_above_the_burst_passes_once_and_leaves_the_bucket_in_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(100, start);
        assert!(bucket.try_take_n(250.0, start), "a full bucket admits one oversized request");
        assert!(!bucket.try_take(start + Duration::from_secs(1)), "150 tokens of debt, 100 refilled");
        assert!(bucket.try_take(start + Duration::from_millis(1520)));
        assert!(!bucket.try_take_n(f64::NAN, start + Duration::from_secs(60)), "NaN costs fail closed");
    }
}
