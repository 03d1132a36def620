//! Limits that keep one client from hurting the others (PROTOCOL.md section 6): JSON
//! nesting depth, the per-connection publish token bucket, and the count of open
//! connections in total and per client address.
//!
//! Each limit refuses only the offender and is counted in the `limits_hit` metric under
//! its [`Limit`] name. The checks here are pure or lock-free except the per-address table,
//! whose lock is held for one map update and never across an `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::metrics::Limit;

/// Whether JSON `text` nests arrays and objects deeper than `max`. A byte scan that
/// runs before the real parse, so a deep document costs no recursion and no allocation.
/// Brackets inside strings do not count. Malformed JSON is left for the parser to refuse.
pub fn too_deep(text: &[u8], max: usize) -> bool {
    // Depth never exceeds the number of brackets opened; counting them is a fast pass
    // (vectorized), and most frames open far fewer than the limit.
    let opened = text.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if opened <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts open WebSocket connections, in total and per client address. Loopback
/// addresses are not limited per address: they are the operator's own host (a proxy in
/// front of the hub, tools, load generators), behind which many clients may share one.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    /// The address it counts against, if it is limited per address.
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for a connection from `ip`, or names the limit that refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Limit> {
        let counted = (!ip.is_loopback()).then_some(ip);
        // One lock for both checks, so concurrent upgrades cannot both take the last place.
        let mut per_ip = self.per_ip.lock();
        if let Some(ip) = counted {
            if per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
                return Err(Limit::ConnectionsPerIp);
            }
        }
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Limit::Connections);
        }
        if let Some(ip) = counted {
            *per_ip.entry(ip).or_insert(0) += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            limits: self.clone(),
            ip: counted,
        })
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_ip = self.limits.per_ip.lock();
        if let Some(ip) = self.ip {
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `Retry-After` a refused connection is told, in seconds.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let cases = [
            (r#"{"a":[1,{"b":2}]}"#, 3, false),
            (r#"{"a":[1,{"b":2}]}"#, 2, true),
            (r#"{"a":"[[[[[[[[[[["}"#, 1, false),
            (r#"{"a":"\"[[[[","b":1}"#, 1, false),
            (r#"[[[[]]]]"#, 4, false),
            (r#"[[[[]]]]"#, 3, true),
            ("", 0, false),
        ];
        for (text, max, deep) in cases {
            assert_eq!(too_deep(text.as_bytes(), max), deep, "{text} at {max}");
        }
    }

    #[test]
    fn bucket_spends_its_burst_then_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(10, 3);
        let start = bucket.refilled;
        assert!((0..3).all(|_| bucket.take_at(start)));
        assert!(!bucket.take_at(start));
        assert!(bucket.take_at(start + Duration::from_millis(100)));
        assert!(!bucket.take_at(start + Duration::from_millis(100)));
        // Never more than the burst, however long it waits.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take_at(later)));
        assert!(!bucket.take_at(later));
    }

    #[test]
    fn connection_places_are_counted_and_given_back() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Limit::ConnectionsPerIp);
        let _third = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Limit::Connections);
        drop(first);
        let _again = limits.admit(a).unwrap();
        assert_eq!(limits.open(), 3);
    }

    #[test]
    fn loopback_is_limited_only_in_total() {
        let limits = Arc::new(ConnectionLimits::new(3, 1));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let places: Vec<_> = (0..3).map(|_| limits.admit(local).unwrap()).collect();
        assert_eq!(limits.admit(local).unwrap_err(), Limit::Connections);
        drop(places);
        assert_eq!(limits.open(), 0);
        assert!(limits.per_ip.lock().is_empty());
    }
}
