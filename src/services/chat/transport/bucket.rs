//! Token buckets: a rate with room for bursts, and a table of them per source address
//! whose size is bounded whatever the number of sources.
//!
//! A bucket holds up to `capacity` tokens and gains `rate` tokens a second; spending
//! takes tokens out, and is refused when too few are left. So a steady sender gets the
//! rate, and a quiet one may spend a whole bucket at once. Time comes in as an
//! argument, so the tests run on made-up instants.
//!
//! The table exists for UDP, where a source address is whatever the sender wrote on
//! the datagram: one machine can claim millions of them. It therefore holds at most a
//! fixed number of buckets and forgets the oldest first. A forgotten source starts
//! again with a full bucket, which is what it would have after being quiet; making the
//! table forget one source costs a forger as many datagrams, from as many other
//! sources, as the table holds.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// One token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens gained per second.
    rate: f64,
    /// The most tokens it holds.
    capacity: f64,
    /// Tokens now, as of `updated`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes `cost` tokens if the bucket holds that many; true if it did.
    pub fn take(&mut self, cost: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// Token buckets by source, at most `max_sources` of them.
#[derive(Debug)]
pub struct SourceBuckets {
    /// Tokens a second for each source; 0 turns the limit off.
    rate: f64,
    /// Each source's bucket size.
    capacity: f64,
    /// The most buckets kept.
    max_sources: usize,
    buckets: HashMap<IpAddr, TokenBucket>,
    /// The sources in `buckets`, oldest first: the next to be forgotten.
    order: VecDeque<IpAddr>,
}

impl SourceBuckets {
    /// An empty table: each source gets `rate` tokens a second and bursts of up to
    /// `capacity`; `rate` 0 means no limit (and no table).
    pub fn new(rate: f64, capacity: f64, max_sources: usize) -> Self {
        SourceBuckets {
            rate,
            capacity,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes `cost` tokens from the bucket of `ip`'s source (see [`source_key`]),
    /// making one (full) if the source is new. True if the source had them.
    pub fn take(&mut self, ip: IpAddr, cost: f64, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let key = source_key(ip);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.take(cost, now);
        }
        if self.buckets.len() >= self.max_sources {
            if let Some(oldest) = self.order.pop_front() {
                self.buckets.remove(&oldest);
            }
        }
        let mut bucket = TokenBucket::new(self.rate, self.capacity, now);
        let taken = bucket.take(cost, now);
        self.buckets.insert(key, bucket);
        self.order.push_back(key);
        taken
    }

    /// Sources with a bucket now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The source an address counts as: an IPv4 address itself (also when written as
/// IPv6, `::ffff:a.b.c.d`); for IPv6, its /64 network, the block one site or one
/// host is normally given, so that the 2^64 addresses of one network share a bucket.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20.0, t0);
        assert!((0..20).all(|_| bucket.take(1.0, t0)), "the whole burst");
        assert!(!bucket.take(1.0, t0), "then nothing until time passes");
        let t1 = t0 + Duration::from_millis(500);
        assert!(
            (0..5).all(|_| bucket.take(1.0, t1)),
            "half a second: 5 more"
        );
        assert!(!bucket.take(1.0, t1));
        // It never holds more than its capacity, however long it waits.
        let later = t1 + Duration::from_secs(3600);
        assert!(bucket.take(20.0, later));
        assert!(!bucket.take(1.0, later));
        // A cost larger than what is left is refused and takes nothing.
        let t2 = later + Duration::from_secs(1);
        assert!(!bucket.take(11.0, t2));
        assert!(bucket.take(10.0, t2));
    }

    #[test]
    fn sources_have_buckets_of_their_own() {
        let t0 = Instant::now();
        let mut table = SourceBuckets::new(100.0, 200.0, 16);
        assert!(table.take(ip("10.0.0.1"), 200.0, t0));
        assert!(!table.take(ip("10.0.0.1"), 1.0, t0));
        assert!(
            table.take(ip("10.0.0.2"), 200.0, t0),
            "another source is not held back"
        );
        assert!(table.take(ip("10.0.0.1"), 100.0, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_oldest_first() {
        let t0 = Instant::now();
        let mut table = SourceBuckets::new(1.0, 1.0, 1000);
        table.take(ip("192.0.2.1"), 1.0, t0);
        for i in 0..20_000u32 {
            let forged = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            table.take(forged, 1.0, t0);
            assert!(table.len() <= 1000);
        }
        assert_eq!(table.len(), 1000);
        assert_eq!(table.order.len(), 1000);
        // The first source was forgotten: it starts again with a full bucket.
        assert!(table.take(ip("192.0.2.1"), 1.0, t0));
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let t0 = Instant::now();
        let mut table = SourceBuckets::new(0.0, 0.0, 10);
        assert!((0..1000).all(|_| table.take(ip("10.0.0.1"), 1e9, t0)));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_ipv6_network_is_one_source_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("192.0.2.7")), ip("192.0.2.7"));
        let t0 = Instant::now();
        let mut table = SourceBuckets::new(1.0, 1.0, 10);
        assert!(table.take(ip("2001:db8::1"), 1.0, t0));
        assert!(!table.take(ip("2001:db8::2"), 1.0, t0), "the same /64");
        assert!(table.take(ip("2001:db8:0:1::1"), 1.0, t0), "the next /64");
    }
}
