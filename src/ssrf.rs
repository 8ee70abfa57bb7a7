//! SSRF guard: keeps webhook deliveries away from internal networks.
//!
//! Subscribers choose the URLs webhookd posts to, so without a guard anyone
//! able to create a subscription could make the service send requests to
//! loopback services, cloud metadata endpoints (169.254.169.254), private
//! networks and so on. The guard has three layers:
//!
//! * [`classify`] decides whether a single IP address is public. It unwraps
//!   the IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
//!   NAT64, 6to4, Teredo, ...) so an internal IPv4 address cannot be smuggled
//!   in through IPv6 notation.
//! * [`TargetPolicy`] adds an operator-configured allow-list on top of that and
//!   checks URLs before a request is made ([`TargetPolicy::check_url`]). This
//!   is needed because reqwest never calls the DNS resolver for IP-literal
//!   hosts.
//! * [`GuardedResolver`] is a reqwest DNS resolver that filters the addresses
//!   DNS actually returns at connect time, so a hostname that resolves (or
//!   re-binds) to an internal address is refused as well.
//!
//! Redirects are never followed (the client's policy is `none`), so a
//! `Location` naming an internal address is never reached;
//! [`find_blocked`] recovers the refusal reason from a reqwest error.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

/// Why an address or URL was refused as a delivery target.
///
/// Exists so the API can answer with a precise message (422) and the delivery
/// worker can record why an attempt was refused. The `Display` text names the
/// range, e.g. "127.0.0.1 is a loopback address".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// 127.0.0.0/8 or ::1 (also used for `localhost` names).
    #[error("{0} is a loopback address")]
    Loopback(IpAddr),
    /// RFC 1918 private networks (10/8, 172.16/12, 192.168/16), the
    /// deprecated IPv6 site-local range fec0::/10 and the local-use NAT64
    /// prefix 64:ff9b:1::/48.
    #[error("{0} is a private network address")]
    Private(IpAddr),
    /// Carrier-grade NAT shared address space 100.64.0.0/10 (RFC 6598).
    #[error("{0} is a carrier-grade NAT shared address (100.64.0.0/10)")]
    SharedCgnat(IpAddr),
    /// 169.254.0.0/16 (includes cloud metadata at 169.254.169.254) and fe80::/10.
    #[error("{0} is a link-local address")]
    LinkLocal(IpAddr),
    /// IPv6 unique-local addresses fc00::/7.
    #[error("{0} is a unique-local IPv6 address")]
    UniqueLocal(IpAddr),
    /// 224.0.0.0/4 and ff00::/8.
    #[error("{0} is a multicast address")]
    Multicast(IpAddr),
    /// 0.0.0.0/8 ("this network") and ::.
    #[error("{0} is an unspecified address")]
    Unspecified(IpAddr),
    /// 255.255.255.255.
    #[error("{0} is the broadcast address")]
    Broadcast(IpAddr),
    /// Documentation ranges: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
    /// 2001:db8::/32, 3fff::/20.
    #[error("{0} is a documentation address")]
    Documentation(IpAddr),
    /// Benchmarking ranges 198.18.0.0/15 and 2001:2::/48.
    #[error("{0} is a benchmarking address")]
    Benchmarking(IpAddr),
    /// Other special-purpose or reserved space that is not globally
    /// reachable: 192.0.0.0/24, 192.88.99.0/24, 240.0.0.0/4, IPv6 outside
    /// 2000::/3, most of 2001::/23, deprecated IPv4-embedding forms, ...
    #[error("{0} is a reserved address")]
    Reserved(IpAddr),
    /// An IPv6 address that embeds a blocked IPv4 address; `inner` is the
    /// verdict for the embedded IPv4 address.
    #[error("{ip} embeds an IPv4 address ({form}) and {inner}")]
    Embedded {
        /// The IPv6 address as given.
        ip: Ipv6Addr,
        /// Name of the embedding form, e.g. "IPv4-mapped" or "NAT64".
        form: &'static str,
        /// Why the embedded IPv4 address is blocked.
        inner: Box<Blocked>,
    },
    /// The URL scheme is not http or https.
    #[error("URL scheme {0:?} is not allowed (only http and https)")]
    NotAllowedScheme(String),
    /// The URL has no host.
    #[error("URL has no host")]
    NoHost,
    /// The URL host cannot be used as a delivery target.
    #[error("invalid URL host {0:?}")]
    InvalidHost(String),
}

impl Blocked {
    /// The innermost reason: for [`Blocked::Embedded`] the verdict on the
    /// embedded IPv4 address, otherwise `self`. Lets callers match on the
    /// category without caring how the address was written.
    #[cfg(test)]
    pub fn root(&self) -> &Blocked {
        match self {
            Blocked::Embedded { inner, .. } => inner.root(),
            other => other,
        }
    }

    /// The refused address as it was checked, if the refusal is about an
    /// address (not about the URL shape).
    #[cfg(test)]
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Blocked::Loopback(ip)
            | Blocked::Private(ip)
            | Blocked::SharedCgnat(ip)
            | Blocked::LinkLocal(ip)
            | Blocked::UniqueLocal(ip)
            | Blocked::Multicast(ip)
            | Blocked::Unspecified(ip)
            | Blocked::Broadcast(ip)
            | Blocked::Documentation(ip)
            | Blocked::Benchmarking(ip)
            | Blocked::Reserved(ip) => Some(*ip),
            Blocked::Embedded { ip, .. } => Some(IpAddr::V6(*ip)),
            Blocked::NotAllowedScheme(_) | Blocked::NoHost | Blocked::InvalidHost(_) => None,
        }
    }

    /// Short stable name of the root category (e.g. "loopback",
    /// "link-local"), for metrics, logs and tests.
    #[cfg(test)]
    pub fn category(&self) -> &'static str {
        match self.root() {
            Blocked::Loopback(_) => "loopback",
            Blocked::Private(_) => "private",
            Blocked::SharedCgnat(_) => "shared-cgnat",
            Blocked::LinkLocal(_) => "link-local",
            Blocked::UniqueLocal(_) => "unique-local",
            Blocked::Multicast(_) => "multicast",
            Blocked::Unspecified(_) => "unspecified",
            Blocked::Broadcast(_) => "broadcast",
            Blocked::Documentation(_) => "documentation",
            Blocked::Benchmarking(_) => "benchmarking",
            Blocked::Reserved(_) => "reserved",
            // `root()` never returns `Embedded`; keep the match total anyway.
            Blocked::Embedded { .. } => "embedded",
            Blocked::NotAllowedScheme(_) => "scheme",
            Blocked::NoHost => "no-host",
            Blocked::InvalidHost(_) => "invalid-host",
        }
    }
}

/// Classifies an IP address as a delivery target.
///
/// Returns `None` when the address is public (allowed) and the reason
/// otherwise. IPv6 forms that embed an IPv4 address are unwrapped and the
/// embedded address is classified too, so `::ffff:127.0.0.1`,
/// `64:ff9b::7f00:1` or `2002:7f00:1::` are refused like `127.0.0.1`.
pub fn classify(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(v4: Ipv4Addr) -> Option<Blocked> {
    let ip = IpAddr::V4(v4);
    let verdict = match v4.octets() {
        [0, ..] => Blocked::Unspecified(ip),
        [10, ..] => Blocked::Private(ip),
        [100, b, ..] if b & 0xc0 == 64 => Blocked::SharedCgnat(ip),
        [127, ..] => Blocked::Loopback(ip),
        [169, 254, ..] => Blocked::LinkLocal(ip),
        [172, b, ..] if b & 0xf0 == 16 => Blocked::Private(ip),
        // IETF protocol assignments (includes 192.0.0.170/171 NAT64 discovery).
        [192, 0, 0, _] => Blocked::Reserved(ip),
        [192, 0, 2, _] => Blocked::Documentation(ip),
        // Deprecated 6to4 relay anycast (RFC 7526).
        [192, 88, 99, _] => Blocked::Reserved(ip),
        [192, 168, ..] => Blocked::Private(ip),
        [198, b, ..] if b & 0xfe == 18 => Blocked::Benchmarking(ip),
        [198, 51, 100, _] => Blocked::Documentation(ip),
        [203, 0, 113, _] => Blocked::Documentation(ip),
        [255, 255, 255, 255] => Blocked::Broadcast(ip),
        [a, ..] if a & 0xf0 == 224 => Blocked::Multicast(ip),
        [a, ..] if a >= 240 => Blocked::Reserved(ip),
        _ => return None,
    };
    Some(verdict)
}

/// Verdict for an IPv6 address embedding `v4`. `routable` says whether the
/// form reaches the embedded address when that address is public; forms that
/// do not (deprecated or local-only) are refused as reserved either way.
fn embedded(v6: Ipv6Addr, form: &'static str, v4: Ipv4Addr, routable: bool) -> Option<Blocked> {
    match classify_v4(v4) {
        Some(inner) => Some(Blocked::Embedded {
            ip: v6,
            form,
            inner: Box::new(inner),
        }),
        None if routable => None,
        None => Some(Blocked::Reserved(IpAddr::V6(v6))),
    }
}

/// The low 32 bits of an IPv6 address as an IPv4 address.
fn low_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn classify_v6(v6: Ipv6Addr) -> Option<Blocked> {
    let ip = IpAddr::V6(v6);
    let s = v6.segments();
    if v6.is_unspecified() {
        return Some(Blocked::Unspecified(ip));
    }
    if v6.is_loopback() {
        return Some(Blocked::Loopback(ip));
    }
    match s {
        // ::ffff:a.b.c.d — the OS connects to the IPv4 address itself.
        [0, 0, 0, 0, 0, 0xffff, _, _] => embedded(v6, "IPv4-mapped", low_v4(v6), true),
        // ::a.b.c.d — deprecated IPv4-compatible form (:: and ::1 handled above).
        [0, 0, 0, 0, 0, 0, _, _] => embedded(v6, "IPv4-compatible", low_v4(v6), false),
        // ::ffff:0:a.b.c.d — SIIT IPv4-translated (RFC 2765), not globally routed.
        [0, 0, 0, 0, 0xffff, 0, _, _] => embedded(v6, "IPv4-translated", low_v4(v6), false),
        // 64:ff9b::/96 — well-known NAT64 prefix (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => embedded(v6, "NAT64", low_v4(v6), true),
        // 64:ff9b:1::/48 — local-use NAT64 prefixes (RFC 8215).
        [0x64, 0xff9b, 1, ..] => Some(Blocked::Private(ip)),
        // 2002::/16 — 6to4, IPv4 address in bits 16..48.
        [0x2002, hi, lo, ..] => {
            let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            embedded(v6, "6to4", v4, true)
        }
        // 2001::/32 — Teredo; the client's IPv4 address is stored inverted in
        // the low 32 bits. Teredo is not globally reachable (RFC 6890) so it
        // is refused either way; the embedded verdict only sharpens the message.
        [0x2001, 0, ..] => {
            let client = Ipv4Addr::from(!u32::from(low_v4(v6)));
            embedded(v6, "Teredo", client, false)
        }
        [0x2001, 0xdb8, ..] => Some(Blocked::Documentation(ip)),
        [0x2001, 2, 0, ..] => Some(Blocked::Benchmarking(ip)),
        // 2001::/23 — IETF protocol assignments; only a few blocks in it are
        // globally reachable (IANA special-purpose registry).
        [0x2001, b, ..] if b < 0x200 => {
            // 2001:1::1, 2001:1::2, 2001:1::3 — PCP, TURN and DNS-SD anycast.
            let anycast = b == 1 && s[2..7] == [0; 5] && (1..=3).contains(&s[7]);
            let global = anycast
                || b == 3 // 2001:3::/32 AMT
                || (b == 4 && s[2] == 0x112) // 2001:4:112::/48 AS112-v6
                || (0x20..=0x3f).contains(&b); // 2001:20::/28 ORCHIDv2, 2001:30::/28 DRIP
            if global {
                None
            } else {
                Some(Blocked::Reserved(ip))
            }
        }
        // 3fff::/20 — documentation (RFC 9637).
        [0x3fff, b, ..] if b & 0xf000 == 0 => Some(Blocked::Documentation(ip)),
        [a, ..] if a & 0xfe00 == 0xfc00 => Some(Blocked::UniqueLocal(ip)),
        [a, ..] if a & 0xffc0 == 0xfe80 => Some(Blocked::LinkLocal(ip)),
        // fec0::/10 — deprecated site-local, the old IPv6 "private" range.
        [a, ..] if a & 0xffc0 == 0xfec0 => Some(Blocked::Private(ip)),
        [a, ..] if a & 0xff00 == 0xff00 => Some(Blocked::Multicast(ip)),
        // Only 2000::/3 is allocated as global unicast; everything else
        // (100::/64 discard, 5f00::/16 SRv6, unassigned space) is refused.
        [a, ..] if a & 0xe000 != 0x2000 => Some(Blocked::Reserved(ip)),
        _ => None,
    }
}

/// An allow-list entry could not be parsed.
///
/// Exists so a bad `allow` configuration value fails startup with a message
/// naming the offending entry instead of silently allowing or refusing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    /// The entry is neither a CIDR nor an IP address.
    #[error("invalid allow-list entry {entry:?}: expected a CIDR such as 10.0.0.0/8 or fd00::/8, or a single IP address")]
    InvalidEntry {
        /// The offending entry, trimmed.
        entry: String,
    },
}

/// Which delivery targets are acceptable: every public address, plus the
/// operator's allow-listed CIDRs (e.g. `127.0.0.0/8` for local testing or an
/// internal network that really should receive webhooks).
///
/// Shared (behind an `Arc`) by the API, which checks subscription URLs, and
/// by the delivery client's [`GuardedResolver`].
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow: Vec<IpNet>,
}

impl TargetPolicy {
    /// A policy with an empty allow-list: only public addresses are allowed.
    pub fn allow_all_public() -> Self {
        Self::default()
    }

    /// Parses a comma-separated allow-list such as `127.0.0.0/8, ::1/128`.
    ///
    /// Whitespace around entries and empty entries are tolerated; a bare IP
    /// address means a /32 (IPv4) or /128 (IPv6) network. Host bits in a
    /// CIDR are ignored (`127.0.0.1/8` means `127.0.0.0/8`).
    pub fn parse_allow_list(s: &str) -> Result<Self, AllowListError> {
        let mut allow = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = IpNet::from_str(entry)
                .map(|n| n.trunc())
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| AllowListError::InvalidEntry {
                    entry: entry.to_owned(),
                })?;
            allow.push(net);
        }
        Ok(Self { allow })
    }

    /// The allow-listed networks (for logging the effective configuration).
    #[cfg(test)]
    pub fn allow(&self) -> &[IpNet] {
        &self.allow
    }

    fn is_allow_listed(&self, ip: IpAddr) -> bool {
        // An IPv4 address and its IPv4-mapped IPv6 form are the same
        // destination, so an entry in either notation covers both.
        let alt = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || alt.is_some_and(|a| net.contains(&a)))
    }

    /// Checks one address: allowed when it is public or inside the
    /// allow-list. This is what the resolver applies to every DNS answer.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.is_allow_listed(ip) => Ok(()),
            Some(reason) => Err(reason),
        }
    }

    /// Checks a URL before a request is made (and when a subscription is
    /// created): the scheme must be http or https, IP-literal hosts must pass
    /// [`check_ip`](Self::check_ip) (reqwest does not call the resolver for
    /// them) and `localhost` / `*.localhost` names are treated as loopback.
    /// Other domain names pass here; they are checked at connect time by
    /// [`GuardedResolver`].
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Blocked::NotAllowedScheme(other.to_owned())),
        }
        match url.host() {
            None => Err(Blocked::NoHost),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
            Some(Host::Domain(domain)) => self.check_domain(domain),
        }
    }

    fn check_domain(&self, domain: &str) -> Result<(), Blocked> {
        let name = domain.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(Blocked::InvalidHost(domain.to_owned()));
        }
        // The url crate already turns every IPv4 spelling into Host::Ipv4 for
        // http(s); this is a belt-and-braces check in case a literal slips
        // through as a domain.
        if let Ok(ip) = IpAddr::from_str(&name) {
            return self.check_ip(ip);
        }
        if name == "localhost" || name.ends_with(".localhost") {
            // RFC 6761: these names always resolve to loopback. Allowed when
            // the allow-list admits either loopback address; the resolver then
            // keeps only the admitted answers.
            let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
            return match self.check_ip(v4) {
                Ok(()) => Ok(()),
                Err(reason) => self.check_ip(v6).map_err(|_| reason),
            };
        }
        Ok(())
    }
}

/// Every address a hostname resolved to is refused by the policy.
///
/// Returned by [`GuardedResolver`]; its `source()` is the [`Blocked`] reason
/// of the first refused address, so [`find_blocked`] finds it through
/// reqwest's error chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to connect to {host}: none of its addresses is an allowed delivery target")]
pub struct BlockedHost {
    /// The hostname that was resolved.
    pub host: String,
    /// Why the first resolved address was refused.
    #[source]
    pub reason: Blocked,
}

/// Future returned by an injectable lookup function (see
/// [`GuardedResolver::with_lookup`]).
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

type LookupFn = dyn Fn(&str) -> LookupFuture + Send + Sync;

/// The boxed error type reqwest's resolver interface uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// reqwest DNS resolver that refuses internal addresses at connect time.
///
/// Checking a hostname when the subscription is created is not enough: DNS
/// can answer differently later (DNS rebinding). This resolver resolves with
/// the system resolver and filters the answers through the [`TargetPolicy`]:
/// blocked addresses are dropped, and if none is left resolution fails with
/// a [`BlockedHost`] error. Because reqwest connects only to the addresses
/// the resolver returns, the check and the connection use the same answer.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
    lookup: Arc<LookupFn>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn system_lookup(host: &str) -> LookupFuture {
    let host = host.to_owned();
    Box::pin(async move {
        // tokio runs getaddrinfo on its blocking pool, so the runtime's
        // worker threads are never blocked.
        let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
        Ok(addrs.map(|sa| sa.ip()).collect())
    })
}

impl GuardedResolver {
    /// A resolver using the system resolver (getaddrinfo via tokio).
    pub fn new(policy: Arc<TargetPolicy>) -> Self {
        Self {
            policy,
            lookup: Arc::new(system_lookup),
        }
    }

    /// A resolver with an injected lookup function instead of the system
    /// resolver, so tests can simulate arbitrary (rebinding) DNS answers.
    #[cfg(test)]
    pub fn with_lookup<F>(policy: Arc<TargetPolicy>, lookup: F) -> Self
    where
        F: Fn(&str) -> LookupFuture + Send + Sync + 'static,
    {
        Self {
            policy,
            lookup: Arc::new(lookup),
        }
    }

    /// Resolves `host` and returns only the allowed addresses; fails with a
    /// [`BlockedHost`] error when every address is refused, or with the
    /// lookup's `io::Error`. Independent of reqwest so it can be used and
    /// tested directly.
    pub async fn resolve_allowed(&self, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let answers = (self.lookup)(host).await?;
        let mut first_refusal = None;
        let mut allowed = Vec::with_capacity(answers.len());
        for ip in answers {
            match self.policy.check_ip(ip) {
                Ok(()) => allowed.push(ip),
                Err(reason) => {
                    first_refusal.get_or_insert(reason);
                }
            }
        }
        if !allowed.is_empty() {
            return Ok(allowed);
        }
        Err(match first_refusal {
            Some(reason) => Box::new(BlockedHost {
                host: host.to_owned(),
                reason,
            }),
            None => Box::new(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolved to no addresses"),
            )),
        })
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.resolve_allowed(name.as_str()).await?;
            // Port 0 is replaced by reqwest with the URL's port.
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Walks an error's `source()` chain and returns the [`Blocked`] reason if
/// the failure came from the guard.
///
/// Lets the delivery worker tell "refused by the SSRF guard" (a permanent
/// failure, not worth retrying) from ordinary network errors.
pub fn find_blocked<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Blocked> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        if let Some(host) = e.downcast_ref::<BlockedHost>() {
            return Some(&host.reason);
        }
        // io::Error::source() skips the wrapped error, so look inside.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(found) = find_blocked(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected verdict of `TargetPolicy::allow_all_public().check_url`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// Accepted at URL time.
        Allow,
        /// Refused; the value is `Blocked::category()`.
        Block(&'static str),
        /// `Url::parse` rejects the input.
        ParseError,
    }
    use Expect::{Allow, Block, ParseError};

    const CASES: &[(&str, Expect)] = &[
        // IPv4 spellings the url crate normalises.
        ("http://2130706433/", Block("loopback")),
        ("http://0177.0.0.1/", Block("loopback")),
        ("http://0x7f.1/", Block("loopback")),
        ("http://0x7f000001/", Block("loopback")),
        ("http://017700000001/", Block("loopback")),
        ("http://127.1/", Block("loopback")),
        ("http://127.0.0.1.:8080/", Block("loopback")),
        ("http://127.0.0.1\t/", Block("loopback")),
        ("http:/127.0.0.1/", Block("loopback")),
        ("http:\\\\127.0.0.1\\", Block("loopback")),
        (
            "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
            Block("loopback"),
        ),
        ("http://0/", Block("unspecified")),
        ("http://0.0.0.0/", Block("unspecified")),
        ("http://0.1.2.3/", Block("unspecified")),
        // IPv6 literals and IPv4-embedding forms.
        ("http://[::1]/", Block("loopback")),
        ("http://[0:0:0:0:0:0:0:1]:8080/", Block("loopback")),
        ("http://[::]/", Block("unspecified")),
        ("http://[::ffff:127.0.0.1]/", Block("loopback")),
        ("http://[::ffff:7f00:1]/", Block("loopback")),
        ("http://[::ffff:169.254.169.254]/", Block("link-local")),
        ("http://[::127.0.0.1]/", Block("loopback")),
        ("http://[::10.0.0.1]/", Block("private")),
        ("http://[::8.8.8.8]/", Block("reserved")),
        ("http://[::ffff:0:7f00:1]/", Block("loopback")),
        ("http://[64:ff9b::a9fe:a9fe]/", Block("link-local")),
        ("http://[64:ff9b::127.0.0.1]/", Block("loopback")),
        ("http://[64:ff9b:1::a00:1]/", Block("private")),
        ("http://[2002:7f00:1::]/", Block("loopback")),
        ("http://[2002:a9fe:a9fe::1]/", Block("link-local")),
        (
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            Block("documentation"),
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            Block("loopback"),
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",
            Block("reserved"),
        ),
        ("http://[fe80::1]/", Block("link-local")),
        ("http://[fe80::1%25eth0]/", ParseError),
        ("http://[febf:ffff::1]/", Block("link-local")),
        ("http://[fec0::1]/", Block("private")),
        ("http://[fd00::1]/", Block("unique-local")),
        ("http://[fc00::1]/", Block("unique-local")),
        ("http://[ff02::1]/", Block("multicast")),
        ("http://[ff0e::1]/", Block("multicast")),
        ("http://[2001:db8::1]/", Block("documentation")),
        ("http://[3fff::1]/", Block("documentation")),
        ("http://[2001:2::1]/", Block("benchmarking")),
        ("http://[2001:10::1]/", Block("reserved")),
        ("http://[100::1]/", Block("reserved")),
        ("http://[5f00::1]/", Block("reserved")),
        ("http://[4000::1]/", Block("reserved")),
        // localhost names.
        ("http://localhost/", Block("loopback")),
        ("http://LOCALHOST./", Block("loopback")),
        ("http://localhost:8080/x", Block("loopback")),
        ("http://foo.localhost/", Block("loopback")),
        ("http://a.b.LocalHost../", Block("loopback")),
        (
            "http://\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}/",
            Block("loopback"),
        ),
        ("http://localhost.example.com/", Allow),
        ("http://notlocalhost/", Allow),
        // userinfo / fragment tricks.
        ("http://example.com@127.0.0.1/", Block("loopback")),
        ("http://user:pass@[::1]:80/", Block("loopback")),
        ("http://127.0.0.1@example.com/", Allow),
        ("http://127.0.0.1:80@example.com/", Allow),
        ("http://example.com#@127.0.0.1/", Allow),
        ("http://example.com\\@127.0.0.1/", Allow),
        // Cloud metadata and link-local.
        (
            "http://169.254.169.254/latest/meta-data",
            Block("link-local"),
        ),
        ("http://169.254.0.0/", Block("link-local")),
        // RFC 1918 edges.
        ("http://10.0.0.0/", Block("private")),
        ("http://10.255.255.255/", Block("private")),
        ("http://9.255.255.255/", Allow),
        ("http://11.0.0.0/", Allow),
        ("http://172.15.255.255/", Allow),
        ("http://172.16.0.0/", Block("private")),
        ("http://172.31.255.255/", Block("private")),
        ("http://172.32.0.0/", Allow),
        ("http://192.168.0.1/", Block("private")),
        ("http://192.168.255.255/", Block("private")),
        ("http://192.169.0.1/", Allow),
        // Carrier-grade NAT edges.
        ("http://100.63.255.255/", Allow),
        ("http://100.64.0.0/", Block("shared-cgnat")),
        ("http://100.127.255.255/", Block("shared-cgnat")),
        ("http://100.128.0.0/", Allow),
        // Multicast, broadcast, reserved, documentation, benchmarking.
        ("http://224.0.0.1/", Block("multicast")),
        ("http://239.255.255.255/", Block("multicast")),
        ("http://255.255.255.255/", Block("broadcast")),
        ("http://240.0.0.1/", Block("reserved")),
        ("http://192.0.0.8/", Block("reserved")),
        ("http://192.88.99.1/", Block("reserved")),
        ("http://192.0.2.1/", Block("documentation")),
        ("http://198.51.100.7/", Block("documentation")),
        ("http://203.0.113.9/", Block("documentation")),
        ("http://198.18.0.1/", Block("benchmarking")),
        ("http://198.19.255.255/", Block("benchmarking")),
        ("http://198.20.0.0/", Allow),
        // Public addresses and names.
        ("http://93.184.215.14/", Allow),
        ("https://93.184.215.14:8443/hook", Allow),
        ("http://[2606:4700::1111]/", Allow),
        ("http://[::ffff:8.8.8.8]/", Allow),
        ("http://[64:ff9b::808:808]/", Allow),
        ("http://[2002:808:808::1]/", Allow),
        ("http://[2001:4:112::1]/", Allow),
        ("http://[2001:1::1]/", Allow),
        ("http://[2001:1::4]/", Block("reserved")),
        ("https://example.com/webhook", Allow),
        ("http://rebind.test/", Allow),
        // Schemes.
        ("ftp://93.184.215.14/", Block("scheme")),
        ("file:///etc/passwd", Block("scheme")),
        ("gopher://example.com/", Block("scheme")),
        ("ws://example.com/", Block("scheme")),
        ("data:text/plain,hi", Block("scheme")),
        // Malformed.
        ("http://", ParseError),
        ("http://1.2.3.4.5/", ParseError),
        ("http://[::1/", ParseError),
    ];

    fn verdict(input: &str, policy: &TargetPolicy) -> Expect {
        match Url::parse(input) {
            Err(_) => ParseError,
            Ok(url) => match policy.check_url(&url) {
                Ok(()) => Allow,
                Err(b) => Block(b.category()),
            },
        }
    }

    #[test]
    fn url_table() {
        assert!(CASES.len() >= 30);
        let policy = TargetPolicy::allow_all_public();
        let failures: Vec<String> = CASES
            .iter()
            .filter_map(|&(input, want)| {
                let got = verdict(input, &policy);
                (got != want).then(|| format!("{input:?}: want {want:?}, got {got:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    }

    #[test]
    fn url_crate_normalises_ipv4_spellings() {
        for input in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://127.0.0.1./",
        ] {
            let url = Url::parse(input).unwrap();
            assert_eq!(url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)), "{input}");
        }
        let url = Url::parse("http://example.com@127.0.0.1/").unwrap();
        assert_eq!(url.host(), Some(Host::Ipv4(Ipv4Addr::LOCALHOST)));
        let url = Url::parse("http://127.0.0.1@example.com/").unwrap();
        assert_eq!(url.host_str(), Some("example.com"));
    }

    #[test]
    fn messages_name_the_range() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            classify(ip).unwrap().to_string(),
            "127.0.0.1 is a loopback address"
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b = classify(mapped).unwrap();
        assert_eq!(b.root(), &Blocked::Loopback(ip));
        assert_eq!(b.ip(), Some(mapped));
        assert_eq!(
            b.to_string(),
            "::ffff:127.0.0.1 embeds an IPv4 address (IPv4-mapped) and 127.0.0.1 is a loopback address"
        );
        let nat64: IpAddr = "64:ff9b::a9fe:a9fe".parse().unwrap();
        assert_eq!(
            classify(nat64).unwrap().root(),
            &Blocked::LinkLocal("169.254.169.254".parse().unwrap())
        );
        let url = Url::parse("ftp://x/").unwrap();
        assert_eq!(
            TargetPolicy::default().check_url(&url),
            Err(Blocked::NotAllowedScheme("ftp".into()))
        );
        assert_eq!(classify("8.8.8.8".parse().unwrap()), None);
        assert_eq!(classify("2606:4700::1111".parse().unwrap()), None);
    }

    #[test]
    fn allow_list_parsing() {
        let p =
            TargetPolicy::parse_allow_list(" 127.0.0.0/8 ,::1/128,, 10.1.2.3, fd00::1 ").unwrap();
        let want: Vec<IpNet> = ["127.0.0.0/8", "::1/128", "10.1.2.3/32", "fd00::1/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(p.allow(), want.as_slice());
        assert_eq!(p.allow()[2].prefix_len(), 32);
        assert_eq!(p.allow()[3].prefix_len(), 128);

        assert!(TargetPolicy::parse_allow_list("")
            .unwrap()
            .allow()
            .is_empty());
        assert!(TargetPolicy::parse_allow_list("  ")
            .unwrap()
            .allow()
            .is_empty());
        assert!(TargetPolicy::allow_all_public().allow().is_empty());

        let host_bits = TargetPolicy::parse_allow_list("127.0.0.1/8").unwrap();
        assert_eq!(
            host_bits.allow()[0],
            "127.0.0.0/8".parse::<IpNet>().unwrap()
        );

        for bad in [
            "nonsense",
            "10.0.0.0/33",
            "10.0.0/8",
            "::1/129",
            "127.0.0.1/",
        ] {
            let err = TargetPolicy::parse_allow_list(&format!("127.0.0.0/8, {bad}")).unwrap_err();
            assert_eq!(
                err,
                AllowListError::InvalidEntry {
                    entry: bad.to_owned()
                }
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn allow_list_opens_exceptions() {
        let p = TargetPolicy::parse_allow_list("127.0.0.0/8").unwrap();
        let ok = |s: &str| p.check_ip(s.parse().unwrap());
        assert_eq!(ok("127.0.0.1"), Ok(()));
        assert_eq!(ok("127.255.0.9"), Ok(()));
        assert_eq!(ok("::ffff:127.0.0.1"), Ok(()));
        assert_eq!(
            ok("10.0.0.1"),
            Err(Blocked::Private("10.0.0.1".parse().unwrap()))
        );
        assert!(ok("::1").is_err());
        // Only the IPv4-mapped form is the same destination; others are not.
        assert!(ok("2002:7f00:1::").is_err());
        assert!(ok("64:ff9b::7f00:1").is_err());

        let url = |s: &str| p.check_url(&Url::parse(s).unwrap());
        assert_eq!(url("http://127.0.0.1:8080/hook"), Ok(()));
        assert_eq!(url("http://2130706433/"), Ok(()));
        assert_eq!(url("http://[::ffff:127.0.0.1]/"), Ok(()));
        assert_eq!(url("http://localhost/"), Ok(()));
        assert_eq!(url("http://foo.localhost./"), Ok(()));
        assert!(url("http://10.0.0.1/").is_err());
        assert!(url("http://[::1]/").is_err());
        assert!(url("ftp://127.0.0.1/").is_err());

        // ::1 alone also admits localhost (its ::1 answer).
        let v6 = TargetPolicy::parse_allow_list("::1").unwrap();
        assert_eq!(
            v6.check_url(&Url::parse("http://localhost/").unwrap()),
            Ok(())
        );
        assert!(v6.check_ip("127.0.0.1".parse().unwrap()).is_err());

        // An IPv4-mapped allow entry covers the plain IPv4 address too.
        let mapped = TargetPolicy::parse_allow_list("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped.check_ip("10.9.8.7".parse().unwrap()), Ok(()));
        assert!(mapped.check_ip("192.168.1.1".parse().unwrap()).is_err());

        // Public addresses are allowed regardless of the allow-list.
        assert_eq!(p.check_ip("93.184.215.14".parse().unwrap()), Ok(()));
    }

    /// A lookup answering from a fixed table, never touching the network.
    fn fake_dns(
        table: &'static [(&'static str, &'static [&'static str])],
    ) -> impl Fn(&str) -> LookupFuture {
        move |host: &str| {
            let answer = table
                .iter()
                .find(|(name, _)| *name == host)
                .map(|(_, ips)| {
                    ips.iter()
                        .map(|ip| ip.parse().unwrap())
                        .collect::<Vec<IpAddr>>()
                });
            Box::pin(async move {
                answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            })
        }
    }

    const DNS: &[(&str, &[&str])] = &[
        ("rebind.test", &["127.0.0.1"]),
        ("metadata.test", &["169.254.169.254", "fd00::1"]),
        (
            "mixed.test",
            &["10.0.0.1", "93.184.215.14", "::1", "2606:4700::1111"],
        ),
        ("empty.test", &[]),
    ];

    async fn resolve(policy: TargetPolicy, host: &str) -> Result<Vec<IpAddr>, BoxError> {
        let resolver = GuardedResolver::with_lookup(Arc::new(policy), fake_dns(DNS));
        let addrs = reqwest::dns::Resolve::resolve(&resolver, host.parse().unwrap()).await?;
        Ok(addrs
            .map(|sa| {
                assert_eq!(sa.port(), 0);
                sa.ip()
            })
            .collect())
    }

    #[tokio::test]
    async fn resolver_refuses_rebinding_to_loopback() {
        let err = resolve(TargetPolicy::default(), "rebind.test")
            .await
            .unwrap_err();
        assert_eq!(
            find_blocked(&*err),
            Some(&Blocked::Loopback("127.0.0.1".parse().unwrap()))
        );
        assert!(err.to_string().contains("rebind.test"), "{err}");

        let err = resolve(TargetPolicy::default(), "metadata.test")
            .await
            .unwrap_err();
        assert_eq!(
            find_blocked(&*err).map(Blocked::category),
            Some("link-local")
        );
    }

    #[tokio::test]
    async fn resolver_keeps_only_allowed_answers() {
        let ips = resolve(TargetPolicy::default(), "mixed.test")
            .await
            .unwrap();
        let want: Vec<IpAddr> = vec![
            "93.184.215.14".parse().unwrap(),
            "2606:4700::1111".parse().unwrap(),
        ];
        assert_eq!(ips, want);
    }

    #[tokio::test]
    async fn resolver_honours_allow_list() {
        let policy = TargetPolicy::parse_allow_list("127.0.0.0/8").unwrap();
        let ips = resolve(policy, "rebind.test").await.unwrap();
        assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }

    #[tokio::test]
    async fn resolver_lookup_errors_are_not_blocked() {
        let err = resolve(TargetPolicy::default(), "nxdomain.test")
            .await
            .unwrap_err();
        assert_eq!(find_blocked(&*err), None);
        let err = resolve(TargetPolicy::default(), "empty.test")
            .await
            .unwrap_err();
        assert_eq!(find_blocked(&*err), None);
    }

    #[tokio::test]
    async fn real_localhost_is_blocked_without_allow_list() {
        // System resolver; resolving makes no connection.
        let resolver = GuardedResolver::new(Arc::new(TargetPolicy::default()));
        let err = resolver.resolve_allowed("localhost").await.unwrap_err();
        assert_eq!(find_blocked(&*err).map(Blocked::category), Some("loopback"));

        let allowed = GuardedResolver::new(Arc::new(
            TargetPolicy::parse_allow_list("127.0.0.0/8,::1").unwrap(),
        ));
        let ips = allowed.resolve_allowed("localhost").await.unwrap();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
    }

    #[test]
    fn find_blocked_walks_wrappers() {
        let reason = Blocked::Private("10.0.0.1".parse().unwrap());
        let host = BlockedHost {
            host: "x.test".into(),
            reason: reason.clone(),
        };
        let wrapped = io::Error::other(host);
        assert_eq!(find_blocked(&wrapped), Some(&reason));
        assert_eq!(find_blocked(&reason), Some(&reason));
        assert_eq!(find_blocked(&io::Error::other("boom")), None);
    }

    /// Through a real reqwest client: the guard fails the request during DNS
    /// resolution and the reason survives reqwest's error chain. The only
    /// address involved is 127.0.0.1, so nothing outside loopback is reached
    /// even if the guard were broken.
    #[tokio::test]
    async fn reqwest_client_reports_blocked() {
        let resolver =
            GuardedResolver::with_lookup(Arc::new(TargetPolicy::default()), fake_dns(DNS));
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .build()
            .unwrap();
        let err = client
            .get("http://rebind.test:9/")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            find_blocked(&err),
            Some(&Blocked::Loopback("127.0.0.1".parse().unwrap())),
            "{err:?}"
        );
    }
}
