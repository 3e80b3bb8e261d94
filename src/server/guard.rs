//! Defences at the door: origin checks (cross-site WebSocket hijacking and
//! CSRF), sign-in throttling, the per-address cap on anonymous sockets and
//! on the chats they start, and which address a request counts as coming from.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{HeaderMap, Method, header};
use chrono::{DateTime, TimeDelta, Utc};
use dashmap::DashMap;

use crate::config::SecurityConfig;

/// The address a request counts as coming from, for the per-address limits.
/// The peer's own, unless the peer is one of the `trusted` proxies: then the
/// nearest address in `X-Forwarded-For` (read from the right, past further
/// trusted proxies) that is not a trusted proxy. Addresses to the left of it
/// were written by the client and prove nothing. A header that cannot be
/// read leaves the request counted against the proxy.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if trusted.is_empty() || !trusted.contains(&peer.ip()) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        for hop in value.split(',') {
            let hop = hop.trim();
            // "1.2.3.4", "2001:db8::1", or with a port: "1.2.3.4:5678", "[2001:db8::1]:5678".
            let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip())) else {
                return peer;
            };
            hops.push(ip);
        }
    }
    let client = hops.iter().rev().find(|ip| !trusted.contains(ip)).or(hops.first());
    client.map_or(peer, |ip| SocketAddr::new(*ip, 0))
}

/// What the per-address limits count by: an IPv4 address as it is (also when
/// written as IPv6, `::ffff:a.b.c.d`), an IPv6 address by its /64 network.
/// One household or phone gets a whole /64 and may pick any address in it,
/// so counting single IPv6 addresses would let one client open as many
/// sockets, and try as many passwords, as it likes.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
    }
}

/// Which origins a request may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Only the server's own origin (console, admin, API).
    SameOrigin,
    /// Also the configured widget origins (the citizen socket).
    SameOriginOrWidget,
}

/// Checks the `Origin` header against an exact allowlist. A request with no
/// `Origin` comes from something other than a browser page (browsers always
/// send it on WebSocket upgrades and cross-origin writes) and is let through:
/// origin checks protect the victim's browser, not the server.
pub fn origin_allowed(headers: &HeaderMap, security: &SecurityConfig, allowed: Allowed) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    if !security.public_origin.is_empty() && origin == security.public_origin {
        return true;
    }
    if allowed == Allowed::SameOriginOrWidget && security.widget_origins.iter().any(|o| o == origin) {
        return true;
    }
    // Same origin as the Host the browser addressed (either scheme: a TLS proxy may sit in front).
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (host, origin.split_once("://")) {
        (Some(host), Some((scheme, rest))) => (scheme == "http" || scheme == "https") && rest == host,
        _ => false,
    }
}

/// Methods that change state and so need an origin check.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Failed sign-ins per key (an account, an address), with growing delays.
#[derive(Debug)]
pub struct LoginThrottle {
    free_attempts: u32,
    failures: DashMap<String, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// The longest delay between attempts.
const MAX_DELAY: TimeDelta = TimeDelta::minutes(15);
/// Failures are forgotten after this long without any.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(24);

impl LoginThrottle {
    pub fn new(free_attempts: u32) -> LoginThrottle {
        LoginThrottle { free_attempts, failures: DashMap::new() }
    }

    /// `Some(seconds to wait)` if any of `keys` is blocked at `now`.
    pub fn blocked(&self, keys: &[String], now: DateTime<Utc>) -> Option<u64> {
        keys.iter()
            .filter_map(|k| self.failures.get(k).map(|f| f.blocked_until))
            .filter(|until| *until > now)
            .max()
            .map(|until| (until - now).num_seconds().max(1) as u64)
    }

    /// Records a failure for every key: after the free attempts, each failure
    /// doubles the wait (1 s, 2 s, 4 s, … up to 15 minutes).
    pub fn failed(&self, keys: &[String], now: DateTime<Utc>) {
        if self.failures.len() > 100_000 {
            self.failures.retain(|_, f| now - f.last < FORGET_AFTER && f.blocked_until > now - TimeDelta::hours(1));
        }
        for key in keys {
            let mut entry =
                self.failures.entry(key.clone()).or_insert(Failures { count: 0, blocked_until: now, last: now });
            let f = entry.value_mut();
            if now - f.last > FORGET_AFTER {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
            if f.count >= self.free_attempts {
                let doublings = (f.count - self.free_attempts).min(20);
                let delay = TimeDelta::seconds(1i64 << doublings).min(MAX_DELAY);
                f.blocked_until = now + delay;
            }
        }
    }

    /// A correct password clears the account's failures (not the address's:
    /// one valid account must not reset an attacker's count).
    pub fn succeeded(&self, account_key: &str) {
        self.failures.remove(account_key);
    }
}

/// Open citizen sockets per client address.
#[derive(Debug, Default)]
pub struct PerAddress {
    counts: DashMap<IpAddr, usize>,
}

/// Holds one slot for an address until dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let empty = match self.owner.counts.get_mut(&self.address) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if empty {
            self.owner.counts.remove_if(&self.address, |_, n| *n == 0);
        }
    }
}

impl AddressSlot {
    /// The address (or IPv6 /64) the slot is counted by.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

/// Chats started per client address ([`address_key`]): a token bucket per
/// address that holds `per_hour` starts and refills at that rate.
#[derive(Debug)]
pub struct StartBudget {
    per_hour: u32,
    buckets: DashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

impl StartBudget {
    pub fn new(per_hour: u32) -> StartBudget {
        StartBudget { per_hour, buckets: DashMap::new() }
    }

    /// Spends one start for `address` at `now`; `Err(seconds until the next
    /// one)` when none is left.
    pub fn take(&self, address: IpAddr, now: DateTime<Utc>) -> Result<(), u64> {
        let full = f64::from(self.per_hour);
        let per_second = full / 3600.0;
        let refilled = |b: &Bucket| {
            let elapsed = (now - b.at).num_milliseconds().max(0) as f64 / 1000.0;
            (b.tokens + elapsed * per_second).min(full)
        };
        // Forget addresses whose allowance is whole again (then they are as new).
        if self.buckets.len() > 100_000 {
            self.buckets.retain(|_, b| refilled(b) < full);
        }
        let mut bucket = self.buckets.entry(address_key(address)).or_insert(Bucket { tokens: full, at: now });
        let tokens = refilled(&bucket);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(((1.0 - tokens) / per_second).ceil() as u64)
        }
    }
}

impl PerAddress {
    /// Takes a slot if the address (its [`address_key`]) has fewer than `max` open.
    pub fn take(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let address = address_key(address);
        let mut n = self.counts.entry(address).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { owner: self.clone(), address })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn the_client_address_is_taken_from_a_trusted_proxy_only_and_from_the_right() {
        let proxy: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let stranger: SocketAddr = "203.0.113.9:40000".parse().expect("addr");
        let trusted: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip")];
        let ip = |a: SocketAddr| a.ip().to_string();
        // Nobody trusted, or a peer that is not a proxy: the header is ignored.
        assert_eq!(client_address(proxy, &forwarded(&["198.51.100.7"]), &[]), proxy);
        assert_eq!(client_address(stranger, &forwarded(&["198.51.100.7"]), &trusted), stranger);
        // Through the proxy.
        assert_eq!(ip(client_address(proxy, &forwarded(&["198.51.100.7"]), &trusted)), "198.51.100.7");
        // A forged entry on the left does not count; a second trusted proxy is passed over.
        let chain = forwarded(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(ip(client_address(proxy, &chain, &trusted)), "198.51.100.7");
        // Ports and IPv6.
        assert_eq!(ip(client_address(proxy, &forwarded(&["198.51.100.7:5555"]), &trusted)), "198.51.100.7");
        assert_eq!(ip(client_address(proxy, &forwarded(&["[2001:db8::1]:443"]), &trusted)), "2001:db8::1");
        assert_eq!(ip(client_address(proxy, &forwarded(&["2001:db8::1"]), &trusted)), "2001:db8::1");
        // No header, or one that cannot be read: counted against the proxy.
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(client_address(proxy, &forwarded(&["unknown"]), &trusted), proxy);
        assert_eq!(client_address(proxy, &forwarded(&["198.51.100.7, not-an-ip"]), &trusted), proxy);
        // Only proxies in the chain: the one furthest out.
        assert_eq!(ip(client_address(proxy, &forwarded(&["10.0.0.2"]), &trusted)), "10.0.0.2");
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins() {
        let mut security = SecurityConfig::default();
        security.widget_origins = vec!["https://helsingborg.se".into()];
        let same = Allowed::SameOrigin;
        let widget = Allowed::SameOriginOrWidget;
        assert!(origin_allowed(&headers(None, "chatt.se"), &security, same));
        assert!(origin_allowed(&headers(Some("https://chatt.se"), "chatt.se"), &security, same));
        assert!(origin_allowed(&headers(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"), &security, same));
        assert!(!origin_allowed(&headers(Some("https://evil.example"), "chatt.se"), &security, same));
        assert!(!origin_allowed(&headers(Some("https://chatt.se.evil.example"), "chatt.se"), &security, same));
        assert!(!origin_allowed(&headers(Some("null"), "chatt.se"), &security, same));
        assert!(!origin_allowed(&headers(Some("https://helsingborg.se"), "chatt.se"), &security, same));
        assert!(origin_allowed(&headers(Some("https://helsingborg.se"), "chatt.se"), &security, widget));
        assert!(!origin_allowed(&headers(Some("https://helsingborg.se:444"), "chatt.se"), &security, widget));
    }

    #[test]
    fn chat_starts_are_budgeted_per_address_and_refill() {
        let budget = StartBudget::new(3);
        let now = Utc::now();
        let one: IpAddr = "198.51.100.7".parse().expect("ip");
        let other: IpAddr = "198.51.100.8".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(budget.take(one, now), Ok(()));
        }
        // Three an hour: the next in 20 minutes.
        assert_eq!(budget.take(one, now), Err(1200));
        assert_eq!(budget.take(other, now), Ok(()));
        assert_eq!(budget.take(one, now + TimeDelta::minutes(19)), Err(60));
        assert_eq!(budget.take(one, now + TimeDelta::minutes(20)), Ok(()));
        assert!(budget.take(one, now + TimeDelta::minutes(20)).is_err());
        // A whole hour later the whole allowance is back, not more.
        let later = now + TimeDelta::hours(5);
        for _ in 0..3 {
            assert_eq!(budget.take(one, later), Ok(()));
        }
        assert!(budget.take(one, later).is_err());
        // An IPv6 client counts by its /64.
        let v6 = |s: &str| s.parse::<IpAddr>().expect("ip");
        for i in 1..=3 {
            assert_eq!(budget.take(v6(&format!("2001:db8::{i}")), now), Ok(()));
        }
        assert!(budget.take(v6("2001:db8::ffff"), now).is_err());
    }

    #[test]
    fn throttle_grows_and_resets() {
        let t = LoginThrottle::new(3);
        let now = Utc::now();
        let keys = vec!["user:anna".to_string(), "ip:1.2.3.4".to_string()];
        t.failed(&keys, now);
        t.failed(&keys, now);
        assert_eq!(t.blocked(&keys, now), None);
        t.failed(&keys, now);
        assert_eq!(t.blocked(&keys, now), Some(1));
        t.failed(&keys, now + TimeDelta::seconds(2));
        assert_eq!(t.blocked(&keys, now + TimeDelta::seconds(2)), Some(2));
        for i in 0..30 {
            t.failed(&keys, now + TimeDelta::seconds(10 + i));
        }
        assert_eq!(t.blocked(&keys, now + TimeDelta::seconds(40)), Some(15 * 60 - 1));
        t.succeeded("user:anna");
        assert!(t.blocked(&["user:anna".to_string()], now + TimeDelta::seconds(40)).is_none());
        assert!(t.blocked(&["ip:1.2.3.4".to_string()], now + TimeDelta::seconds(40)).is_some());
    }

    #[test]
    fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| address_key(s.parse().expect("ip")).to_string();
        assert_eq!(key("198.51.100.7"), "198.51.100.7");
        assert_eq!(key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        let p = Arc::new(PerAddress::default());
        let _a = p.take("2001:db8::1".parse().expect("ip"), 1).expect("first");
        assert!(p.take("2001:db8::2".parse().expect("ip"), 1).is_none(), "same /64, same count");
        assert!(p.take("2001:db8:0:1::1".parse().expect("ip"), 1).is_some(), "another /64");
    }

    #[test]
    fn per_address_slots() {
        let p = Arc::new(PerAddress::default());
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let a = p.take(ip, 2).expect("first");
        let _b = p.take(ip, 2).expect("second");
        assert!(p.take(ip, 2).is_none());
        drop(a);
        assert!(p.take(ip, 2).is_some());
    }
}
