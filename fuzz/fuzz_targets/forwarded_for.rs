//! The right-most-untrusted `X-Forwarded-For` walk over arbitrary header lines and
//! trusted sets: never a panic, the same answer as a plain reference walk, and nothing a
//! client prepends can change a client address read from an untrusted entry.
//!
//! Input: a header block with `x-forwarded-for:` lines, `trusted:` CIDRs, an optional
//! `peer:` address and a `prefix:` (what the client writes in front); lines that do not
//! parse as a CIDR or an address are skipped, like a bad value never gets into the config.
#![no_main]

use std::net::IpAddr;

use auth_sidecar::net::{CidrSet, ClientIp, canonical, client_ip};
use auth_sidecar_fuzz::{header_lines, values};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let block = header_lines(text);
    let lines = values(&block, "x-forwarded-for");
    let nets: Vec<IpNet> = values(&block, "trusted")
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let peer: Option<IpAddr> = values(&block, "peer").first().and_then(|p| p.parse().ok());
    let trusted = CidrSet::new(nets.iter().copied());

    let got = client_ip(lines.iter().copied(), peer, &trusted);
    let (want, by_untrusted_entry) = reference(&lines, peer, &nets);
    assert_eq!(got, want, "{lines:?} trusted={nets:?} peer={peer:?}");
    if let ClientIp::Known(ip) = got {
        assert_eq!(ip, canonical(ip), "a client address is never v4-mapped");
    }

    // An answer read from an untrusted entry (or a malformed one reached first) does not
    // depend on anything to its left, which is all a client can write.
    if by_untrusted_entry {
        let prefix = values(&block, "prefix")
            .first()
            .copied()
            .unwrap_or("198.51.100.66");
        let mut spoofed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        spoofed[0] = format!("{prefix},{}", spoofed[0]);
        let again = client_ip(spoofed.iter().map(String::as_str), peer, &trusted);
        assert_eq!(
            again, got,
            "prefix {prefix:?} changed the answer for {lines:?}"
        );
    }
});

fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| match (n.trunc(), ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
        _ => false,
    })
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    let bare = match entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        Some(inner) => inner,
        None => entry,
    };
    bare.parse().ok().map(canonical)
}

/// The walk written the plain way: every entry left to right, then scanned from the right.
/// Also says whether the answer came from an untrusted (or malformed) entry.
fn reference(lines: &[&str], peer: Option<IpAddr>, nets: &[IpNet]) -> (ClientIp, bool) {
    let entries: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else {
            return (ClientIp::Invalid, true);
        };
        if !in_any(nets, ip) {
            return (ClientIp::Known(ip), true);
        }
    }
    let fallback = match (entries.first(), peer) {
        (Some(first), _) => ClientIp::Known(parse_entry(first).expect("every entry parsed")),
        (None, Some(peer)) => ClientIp::Known(canonical(peer)),
        (None, None) => ClientIp::Unknown,
    };
    (fallback, false)
}
