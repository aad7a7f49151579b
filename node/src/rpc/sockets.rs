//! Places for open JSON-RPC sockets: a total, and a share per client
//! source, so that one client holding idle sockets cannot take every place
//! and lock the others (the local miner first) out. A source is an IPv4
//! address or an IPv6 /64: one host is usually given a whole /64, so
//! counting single IPv6 addresses would hand it 2^64 shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The client source `ip` counts against, for socket places and for the
/// per-IP rate limits alike.
pub fn client_source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Hands out [`SocketPlace`]s; a refused socket is to be closed at once.
#[derive(Clone, Debug)]
pub struct SocketPlaces {
    max_total: usize,
    max_per_source: Option<usize>,
    counts: Arc<Mutex<Counts>>,
}

impl SocketPlaces {
    /// `max_per_source: None` lets one source take every place.
    pub fn new(max_total: usize, max_per_source: Option<usize>) -> Self {
        Self { max_total, max_per_source, counts: Arc::default() }
    }

    /// A place for a socket from `ip`, held until the place is dropped;
    /// `None` when the server or this source is full.
    pub fn take(&self, ip: IpAddr) -> Option<SocketPlace> {
        let source = client_source(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.per_source.get(&source).copied().unwrap_or(0);
        if counts.total >= self.max_total || self.max_per_source.is_some_and(|max| held >= max) {
            return None;
        }
        counts.total += 1;
        *counts.per_source.entry(source).or_default() += 1;
        Some(SocketPlace { source, counts: self.counts.clone() })
    }
}

/// One open socket's place; dropping it frees the place.
#[derive(Debug)]
pub struct SocketPlace {
    source: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for SocketPlace {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(held) = counts.per_source.get_mut(&self.source) {
            *held -= 1;
            if *held == 0 {
                // Only sources with open sockets are kept: the map is
                // bounded by the total.
                counts.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_takes_its_share_and_others_still_get_in() {
        let places = SocketPlaces::new(4, Some(2));
        let a: Vec<_> = (0..3).filter_map(|_| places.take(ip("10.0.0.1"))).collect();
        assert_eq!(a.len(), 2);
        let b: Vec<_> = (0..3).filter_map(|_| places.take(ip("10.0.0.2"))).collect();
        assert_eq!(b.len(), 2);
        assert!(places.take(ip("10.0.0.3")).is_none(), "the total holds");
        drop(a);
        let c = places.take(ip("10.0.0.3"));
        assert!(c.is_some(), "closed sockets free their places");
        drop(b);
        assert_eq!(places.counts.lock().unwrap().per_source.len(), 1, "sources without sockets are forgotten");
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        assert_eq!(client_source(ip("2001:db8:1:2:aaaa::1")), client_source(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(client_source(ip("2001:db8:1:2::1")), client_source(ip("2001:db8:1:3::1")));
        assert_eq!(client_source(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        let places = SocketPlaces::new(10, Some(1));
        let _held = places.take(ip("2001:db8::1")).unwrap();
        assert!(places.take(ip("2001:db8::2")).is_none());
    }

    #[test]
    fn no_share_lets_one_source_fill_the_total() {
        let places = SocketPlaces::new(3, None);
        let held: Vec<_> = (0..5).filter_map(|_| places.take(ip("127.0.0.1"))).collect();
        assert_eq!(held.len(), 3);
    }
}
