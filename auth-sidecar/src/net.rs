//! Client addresses: CIDR sets and the right-most-untrusted `X-Forwarded-For` walk.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of networks, stored per family: a scan over typed `Ipv4Net`s is ~3x faster than
/// over the `IpNet` enum, and v4 is the common case.
#[derive(Clone, Debug, Default)]
pub struct CidrSet {
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

impl CidrSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = CidrSet::default();
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether `ip` lies in any network. IPv4-mapped IPv6 addresses match as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.contains_v4(a),
            IpAddr::V6(a) => self.contains_v6(a),
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.v4.iter().any(|n| n.contains(&ip))
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        self.v6.iter().any(|n| n.contains(&ip))
    }
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d`, so one v4 rule covers dual-stack listeners.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The client address as far as we can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIp {
    Known(IpAddr),
    /// A malformed `X-Forwarded-For` entry was reached before any untrusted one:
    /// every rule that needs the address denies.
    Invalid,
    /// No `X-Forwarded-For` and no peer address.
    Unknown,
}

/// Resolves the client address from `X-Forwarded-For` (all lines joined by `,`), walking
/// right to left and skipping trusted proxies; the first untrusted entry is the client.
/// Never the left-most entry by default: clients control it. If every entry is trusted
/// the left-most is used (like nginx `real_ip_recursive`). Without the header, the TCP
/// peer is the client.
pub fn client_ip<'a>(
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    peer: Option<IpAddr>,
    trusted: &CidrSet,
) -> ClientIp {
    let mut last_trusted = None;
    for entry in forwarded_for.rev().flat_map(|line| line.rsplit(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_entry(entry) else {
            return ClientIp::Invalid;
        };
        if !trusted.contains(ip) {
            return ClientIp::Known(ip);
        }
        last_trusted = Some(ip);
    }
    match (last_trusted, peer) {
        (Some(ip), _) => ClientIp::Known(ip),
        (None, Some(peer)) => ClientIp::Known(canonical(peer)),
        (None, None) => ClientIp::Unknown,
    }
}

/// An address, optionally in brackets (`[2001:db8::1]`); ports are not accepted.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> CidrSet {
        CidrSet::new(nets.iter().map(|n| n.parse::<IpNet>().expect("test CIDR")))
    }

    #[track_caller]
    fn check(xff: &[&str], peer: Option<&str>, trusted: &[&str], want: ClientIp) {
        let peer = peer.map(|p| p.parse().expect("test peer"));
        let got = client_ip(xff.iter().copied(), peer, &set(trusted));
        assert_eq!(got, want, "xff={xff:?} trusted={trusted:?}");
    }

    fn ip(s: &str) -> ClientIp {
        ClientIp::Known(s.parse().expect("test ip"))
    }

    #[test]
    fn right_most_untrusted_wins() {
        // A spoofed left-most entry never becomes the client.
        check(&["10.0.0.1, 203.0.113.7"], None, &[], ip("203.0.113.7"));
        check(
            &["10.0.0.1, 203.0.113.7, 172.16.0.2"],
            None,
            &["172.16.0.0/12"],
            ip("203.0.113.7"),
        );
        // Multiple header lines are one list, in order.
        check(
            &["1.1.1.1", "203.0.113.7, 172.16.0.2"],
            None,
            &["172.16.0.0/12"],
            ip("203.0.113.7"),
        );
        check(
            &["1.1.1.1, 172.16.0.3", "172.16.0.2"],
            None,
            &["172.16.0.0/12"],
            ip("1.1.1.1"),
        );
    }

    #[test]
    fn all_trusted_takes_left_most_and_absent_takes_peer() {
        check(
            &["10.0.0.9, 10.0.0.5"],
            None,
            &["10.0.0.0/8"],
            ip("10.0.0.9"),
        );
        check(&[], Some("192.0.2.1"), &[], ip("192.0.2.1"));
        check(&[""], Some("192.0.2.1"), &[], ip("192.0.2.1"));
        check(&[], None, &[], ClientIp::Unknown);
    }

    #[test]
    fn ipv6_and_mapped_v4() {
        check(&["2001:db8::1"], None, &[], ip("2001:db8::1"));
        check(&["[2001:db8::1]"], None, &[], ip("2001:db8::1"));
        check(&["::ffff:198.51.100.4"], None, &[], ip("198.51.100.4"));
        check(
            &["198.51.100.4, ::ffff:10.1.2.3"],
            None,
            &["10.0.0.0/8"],
            ip("198.51.100.4"),
        );
        assert!(set(&["10.0.0.0/8"]).contains("::ffff:10.9.9.9".parse().expect("ip")));
        assert!(set(&["2001:db8::/32"]).contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!set(&["2001:db8::/32"]).contains("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn malformed_entry_before_an_untrusted_one_is_invalid() {
        check(&["203.0.113.7, bogus"], None, &[], ClientIp::Invalid);
        check(&["203.0.113.7:8080"], None, &[], ClientIp::Invalid);
        // Past the first untrusted entry nothing else is read.
        check(&["bogus, 203.0.113.7"], None, &[], ip("203.0.113.7"));
    }
}
