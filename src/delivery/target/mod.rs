//! Where a webhook may point: the one home of the guard against server-side request
//! forgery (SSRF). A webhook URL is chosen by an API client, and without a guard the
//! server would post, from inside the network, to whatever it names: the cloud metadata
//! service, a database port on localhost, an admin page on 10.x.
//!
//! It owns the forbidden address ranges and host names, the check run when a
//! subscription is created or its URL changed (the host resolved once, refused if any
//! address is forbidden), and the resolver handed to reqwest, which checks again, at
//! connect time, the addresses it actually returns, so that DNS rebinding cannot get
//! around the first check. It never sends a request and never stores anything, and it
//! never parses a host by hand: hosts come from the parsed `url::Host`, whose WHATWG
//! IPv4 parser already turns `127.1`, `2130706433`, `0x7f000001` and `017700000001` into
//! the one address 127.0.0.1.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The variable that lifts the private-network part of the guard, named in refusals.
pub const ALLOW_PRIVATE_VARIABLE: &str = "ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS";

/// The longest host name DNS can carry (RFC 1035: 255 octets on the wire, 253 written).
pub const MAX_HOST_LENGTH: usize = 253;
const MAX_LABEL_LENGTH: usize = 63;

/// How long the create-time lookup may take. Short: it runs inside an API request, and a
/// name that does not answer in time is accepted anyway (the connect-time check covers
/// it).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an address may not be a webhook target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// 169.254.169.254 and its cousins: the credentials of the machine itself.
    CloudMetadata,
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and local-use NAT64 (64:ff9b:1::/48).
    Private,
    /// 100.64.0.0/10, the carrier-grade NAT range (RFC 6598); Alibaba's metadata
    /// service lives there too.
    SharedAddressSpace,
    LinkLocal,
    /// fc00::/7 (RFC 4193).
    UniqueLocal,
    /// fec0::/10, deprecated (RFC 3879) but still routed inside some networks.
    SiteLocal,
    /// 198.18.0.0/15 and 2001:2::/48 (RFC 2544, RFC 5180): lab networks.
    Benchmarking,
    /// 0.0.0.0 and `::`: on Linux a connection to them reaches this machine.
    Unspecified,
    /// 0.0.0.0/8: "this network" (RFC 791), never a destination.
    ThisNetwork,
    Broadcast,
    Multicast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 192.0.0.0/24, IETF protocol assignments (RFC 6890).
    ProtocolAssignment,
    /// 240.0.0.0/4 (future use), 192.88.99.0/24 (the retired 6to4 relay anycast),
    /// 100::/64 (discard only) and the deprecated IPv4-compatible `::a.b.c.d`.
    Reserved,
}

impl Forbidden {
    fn describe(self) -> &'static str {
        match self {
            Forbidden::CloudMetadata => "the cloud metadata service",
            Forbidden::Loopback => "a loopback address",
            Forbidden::Private => "a private address",
            Forbidden::SharedAddressSpace => "a carrier-grade NAT (shared) address",
            Forbidden::LinkLocal => "a link-local address",
            Forbidden::UniqueLocal => "a unique-local (private) address",
            Forbidden::SiteLocal => "a site-local address",
            Forbidden::Benchmarking => "a benchmarking-network address",
            Forbidden::Unspecified => "the unspecified address",
            Forbidden::ThisNetwork => "a \"this network\" address",
            Forbidden::Broadcast => "the broadcast address",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Documentation => "a documentation address",
            Forbidden::ProtocolAssignment => "an IETF protocol-assignment address",
            Forbidden::Reserved => "a reserved address",
        }
    }

    /// Whether `ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS` allows it: the networks an
    /// on-premises receiver may really live on. The rest no receiver ever is: the
    /// metadata service (the first prize of SSRF), multicast and broadcast (no TCP
    /// peer), documentation and reserved ranges, and the unspecified address.
    fn private_network(self) -> bool {
        matches!(
            self,
            Forbidden::Loopback
                | Forbidden::Private
                | Forbidden::SharedAddressSpace
                | Forbidden::LinkLocal
                | Forbidden::UniqueLocal
                | Forbidden::SiteLocal
                | Forbidden::Benchmarking
        )
    }
}

/// A forbidden address, and the IPv4 address inside it when that is what was refused
/// (`::ffff:169.254.169.254`, `64:ff9b::a00:1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub class: Forbidden,
    pub embedded: Option<Ipv4Addr>,
}

/// Why a host name may not be a webhook target, whatever it resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenName {
    /// `localhost` and `*.localhost` (RFC 6761: always loopback, never asked of DNS).
    Localhost,
    /// `metadata.google.internal`.
    CloudMetadata,
    /// Names that exist only inside a network: `.internal` (reserved by ICANN for
    /// private use), `.local` (mDNS, RFC 6762), `.home.arpa` (RFC 8375). Refused by name
    /// because from here they may not resolve at create time, and would then pass.
    PrivateUse(&'static str),
}

impl ForbiddenName {
    fn private_network(self) -> bool {
        !matches!(self, ForbiddenName::CloudMetadata)
    }
}

impl fmt::Display for ForbiddenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForbiddenName::Localhost => f.write_str("a loopback name"),
            ForbiddenName::CloudMetadata => f.write_str("the cloud metadata service"),
            ForbiddenName::PrivateUse(suffix) => write!(f, "a private-use name (`{suffix}`)"),
        }
    }
}

/// A target the guard refuses. Each message reads after "`url` ", and says what lifts
/// the refusal when something does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not a policy refusal but a malformed host: DNS cannot carry it.
    HostTooLong {
        length: usize,
    },
    LabelTooLong,
    /// An IP-literal host that is forbidden.
    Address {
        address: IpAddr,
        refused: Refused,
    },
    /// A host name that is forbidden by name.
    Name {
        host: String,
        why: ForbiddenName,
    },
    /// A host name with a forbidden address among those it resolves to.
    Resolved {
        host: String,
        address: IpAddr,
        refused: Refused,
    },
    /// At connect time: every address the name resolved to is forbidden.
    NothingAllowed {
        host: String,
        refused: Vec<(IpAddr, Refused)>,
    },
}

impl TargetError {
    /// Whether this is a refusal of the policy (`forbidden_target`) rather than a host
    /// of the wrong shape (`invalid_field`).
    pub fn is_forbidden(&self) -> bool {
        !matches!(
            self,
            TargetError::HostTooLong { .. } | TargetError::LabelTooLong
        )
    }

    fn private_network(&self) -> bool {
        match self {
            TargetError::HostTooLong { .. } | TargetError::LabelTooLong => false,
            TargetError::Address { refused, .. } | TargetError::Resolved { refused, .. } => {
                refused.class.private_network()
            }
            TargetError::Name { why, .. } => why.private_network(),
            TargetError::NothingAllowed { refused, .. } => {
                refused.iter().all(|(_, r)| r.class.private_network())
            }
        }
    }
}

fn describe(f: &mut fmt::Formatter<'_>, address: IpAddr, refused: Refused) -> fmt::Result {
    match refused.embedded {
        Some(v4) => write!(
            f,
            "{address}, which embeds {v4}, {}",
            refused.class.describe()
        ),
        None => write!(f, "{address}, {}", refused.class.describe()),
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::HostTooLong { length } => {
                return write!(
                    f,
                    "must name a host of at most {MAX_HOST_LENGTH} characters (this one has {length})"
                )
            }
            TargetError::LabelTooLong => {
                return write!(
                    f,
                    "must name a host whose dot-separated labels are at most {MAX_LABEL_LENGTH} characters"
                )
            }
            TargetError::Address { address, refused } => {
                f.write_str("points at ")?;
                describe(f, *address, *refused)?;
            }
            TargetError::Name { host, why } => write!(f, "names `{host}`, {why}")?,
            TargetError::Resolved {
                host,
                address,
                refused,
            } => {
                write!(f, "names `{host}`, which resolves to ")?;
                describe(f, *address, *refused)?;
            }
            TargetError::NothingAllowed { host, refused } => {
                write!(f, "names `{host}`, which resolved only to forbidden addresses: ")?;
                for (i, (address, why)) in refused.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    describe(f, *address, *why)?;
                }
            }
        }
        if self.private_network() {
            write!(
                f,
                "; set {ALLOW_PRIVATE_VARIABLE}=true for on-premises receivers"
            )
        } else {
            f.write_str("; no webhook may target it")
        }
    }
}

impl std::error::Error for TargetError {}

/// Why `ip` may not be a webhook target, or `None` when it may.
pub fn classify(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).map(|class| Refused {
            class,
            embedded: None,
        }),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        // AWS, GCP, Azure, OpenStack (169.254.169.254), AWS ECS task credentials
        // (169.254.170.2), Alibaba Cloud (100.100.100.200).
        (169, 254, 169, 254) | (169, 254, 170, 2) | (100, 100, 100, 200) => {
            Forbidden::CloudMetadata
        }
        (0, 0, 0, 0) => Forbidden::Unspecified,
        (0, ..) => Forbidden::ThisNetwork,
        (127, ..) => Forbidden::Loopback,
        (10, ..) | (172, 16..=31, ..) | (192, 168, ..) => Forbidden::Private,
        (100, 64..=127, ..) => Forbidden::SharedAddressSpace,
        (169, 254, ..) => Forbidden::LinkLocal,
        (192, 0, 0, _) => Forbidden::ProtocolAssignment,
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => Forbidden::Documentation,
        (198, 18..=19, ..) => Forbidden::Benchmarking,
        (192, 88, 99, _) => Forbidden::Reserved,
        (224..=239, ..) => Forbidden::Multicast,
        (255, 255, 255, 255) => Forbidden::Broadcast,
        (240..=255, ..) => Forbidden::Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refused> {
    let plain = |class| {
        Some(Refused {
            class,
            embedded: None,
        })
    };
    let segments = ip.segments();
    let octets = ip.octets();
    // The forms that carry an IPv4 address are judged by it, so that no spelling of a
    // forbidden IPv4 address gets through as IPv6.
    let embedded = |v4: Ipv4Addr, otherwise: Option<Forbidden>| {
        classify_v4(v4)
            .map(|class| Refused {
                class,
                embedded: Some(v4),
            })
            .or(otherwise.map(|class| Refused {
                class,
                embedded: None,
            }))
    };
    let last_32 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if ip.is_unspecified() {
        return plain(Forbidden::Unspecified);
    }
    if ip.is_loopback() {
        return plain(Forbidden::Loopback);
    }
    match segments {
        // IPv4-mapped, ::ffff:a.b.c.d: the kernel sends it to a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, _, _] => embedded(last_32, None),
        // IPv4-compatible, ::a.b.c.d (deprecated by RFC 4291): refused whatever it holds.
        [0, 0, 0, 0, 0, 0, _, _] => embedded(last_32, Some(Forbidden::Reserved)),
        // NAT64 (RFC 6052): the translator connects to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => embedded(last_32, None),
        // Local-use NAT64 (RFC 8215): a network's own translator, prefix length unknown.
        [0x64, 0xff9b, 1, ..] => plain(Forbidden::Private),
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is the site behind IPv4 AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => embedded(
            Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8),
            None,
        ),
        // Discard-only (RFC 6666).
        [0x100, 0, 0, 0, ..] => plain(Forbidden::Reserved),
        [0x2001, 0xdb8, ..] => plain(Forbidden::Documentation),
        [0x3fff, s, ..] if s < 0x1000 => plain(Forbidden::Documentation),
        [0x2001, 2, 0, ..] => plain(Forbidden::Benchmarking),
        // AWS's metadata service over IPv6 (inside fc00::/7, but never a receiver).
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] => plain(Forbidden::CloudMetadata),
        [s, ..] if s & 0xfe00 == 0xfc00 => plain(Forbidden::UniqueLocal),
        [s, ..] if s & 0xffc0 == 0xfe80 => plain(Forbidden::LinkLocal),
        [s, ..] if s & 0xffc0 == 0xfec0 => plain(Forbidden::SiteLocal),
        [s, ..] if s & 0xff00 == 0xff00 => plain(Forbidden::Multicast),
        _ => None,
    }
}

/// Why a host name is refused by name, or `None`. Expects the lower-case, ASCII form
/// `url` gives a domain.
pub fn classify_name(host: &str) -> Option<ForbiddenName> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(ForbiddenName::Localhost);
    }
    if host == "metadata.google.internal" {
        return Some(ForbiddenName::CloudMetadata);
    }
    [".internal", ".local", ".home.arpa"]
        .into_iter()
        .find(|suffix| host.ends_with(suffix))
        .map(ForbiddenName::PrivateUse)
}

/// A name's addresses. The system resolver in production; a fixed table in tests.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> + Send + Sync,
>;

/// The system resolver (getaddrinfo, on tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|socket| socket.ip())
                .collect())
        })
    })
}

/// The guard, as configured: whether private networks are allowed, and how names are
/// resolved.
#[derive(Clone)]
pub struct TargetPolicy {
    allow_private_networks: bool,
    lookup: Lookup,
}

impl fmt::Debug for TargetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetPolicy")
            .field("allow_private_networks", &self.allow_private_networks)
            .finish_non_exhaustive()
    }
}

impl TargetPolicy {
    pub fn new(allow_private_networks: bool) -> TargetPolicy {
        TargetPolicy::with_lookup(allow_private_networks, system_lookup())
    }

    pub fn with_lookup(allow_private_networks: bool, lookup: Lookup) -> TargetPolicy {
        TargetPolicy {
            allow_private_networks,
            lookup,
        }
    }

    fn refuses(&self, refused: Refused) -> bool {
        !(self.allow_private_networks && refused.class.private_network())
    }

    /// Why `ip` is refused under this policy, or `None`.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refused> {
        classify(ip).filter(|refused| self.refuses(*refused))
    }

    fn check_name(&self, host: &str) -> Result<(), TargetError> {
        match classify_name(host) {
            Some(why) if !(self.allow_private_networks && why.private_network()) => {
                Err(TargetError::Name {
                    host: host.to_owned(),
                    why,
                })
            }
            _ => Ok(()),
        }
    }

    /// Everything that can be judged without a lookup: the host's length, an IP-literal
    /// host, a host name refused by name. The sender runs it before every request,
    /// because reqwest never asks the resolver about an IP literal.
    pub fn check_without_lookup(&self, url: &Url) -> Result<(), TargetError> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check_address(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check_address(IpAddr::V6(v6)),
            Some(url::Host::Domain(host)) => {
                let bare = host.strip_suffix('.').unwrap_or(host);
                if bare.len() > MAX_HOST_LENGTH {
                    return Err(TargetError::HostTooLong { length: bare.len() });
                }
                if bare.split('.').any(|label| label.len() > MAX_LABEL_LENGTH) {
                    return Err(TargetError::LabelTooLong);
                }
                self.check_name(host)
            }
            // `parse_webhook_url` refuses a URL without a host; nothing to connect to.
            None => Ok(()),
        }
    }

    fn check_address(&self, address: IpAddr) -> Result<(), TargetError> {
        match self.refusal(address) {
            Some(refused) => Err(TargetError::Address { address, refused }),
            None => Ok(()),
        }
    }

    /// The create and update check: [`Self::check_without_lookup`], then a host name is
    /// resolved (at most [`RESOLVE_TIMEOUT`]) and refused if any of its addresses is
    /// forbidden. A name that does not resolve from here passes: the connect-time check
    /// judges what it resolves to when it is used.
    pub async fn check(&self, url: &Url) -> Result<(), TargetError> {
        self.check_without_lookup(url)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let addresses =
            match tokio::time::timeout(RESOLVE_TIMEOUT, (self.lookup)(host.to_owned())).await {
                Ok(Ok(addresses)) => addresses,
                Ok(Err(e)) => {
                    tracing::debug!(host, error = %e, "webhook host does not resolve; accepted");
                    return Ok(());
                }
                Err(_) => {
                    tracing::debug!(host, "webhook host lookup timed out; accepted");
                    return Ok(());
                }
            };
        for address in addresses {
            if let Some(refused) = self.refusal(address) {
                return Err(TargetError::Resolved {
                    host: host.to_owned(),
                    address,
                    refused,
                });
            }
        }
        Ok(())
    }

    /// The resolver to give reqwest.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

/// reqwest's resolver: one lookup, then only the allowed addresses are handed to the
/// connector, so the addresses checked are the addresses connected to (no second lookup
/// a rebinding DNS server could answer differently). Fails when none is left.
#[derive(Debug)]
pub struct GuardedResolver {
    policy: TargetPolicy,
}

impl GuardedResolver {
    /// The addresses a lookup of `host` returned that may be connected to; an error
    /// when there were some and none of them may.
    fn allowed(&self, host: &str, addresses: Vec<IpAddr>) -> Result<Vec<IpAddr>, TargetError> {
        let (allowed, refused): (Vec<_>, Vec<_>) = addresses
            .into_iter()
            .map(|address| (address, self.policy.refusal(address)))
            .partition(|(_, refused)| refused.is_none());
        let refused: Vec<_> = refused
            .into_iter()
            .filter_map(|(address, r)| r.map(|r| (address, r)))
            .collect();
        if allowed.is_empty() && !refused.is_empty() {
            return Err(TargetError::NothingAllowed {
                host: host.to_owned(),
                refused,
            });
        }
        if !refused.is_empty() {
            tracing::warn!(
                host,
                refused = refused.len(),
                "webhook host resolved to forbidden addresses too; connecting only to the others"
            );
        }
        Ok(allowed.into_iter().map(|(address, _)| address).collect())
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = GuardedResolver {
            policy: self.policy.clone(),
        };
        let host = name.as_str().to_owned();
        Box::pin(async move {
            resolver.policy.check_name(&host)?;
            // A failed lookup is not the guard's to judge: it goes back to reqwest as is.
            let addresses = (resolver.policy.lookup)(host.clone()).await?;
            let allowed = resolver.allowed(&host, addresses)?;
            // Port 0: reqwest puts in the URL's port.
            let addrs: Addrs = Box::new(
                allowed
                    .into_iter()
                    .map(|address| SocketAddr::new(address, 0)),
            );
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests;
