//! `decide`: the whole pure decision over a compiled runtime, with 100 rules and the
//! request matching the last one (the worst case for first-match-wins), public and
//! authenticated (token from the cache); `cache/get`: a verification cache hit on its own;
//! `policy/cidr`: a 100-network allow-list, typed v4/v6 sets beside a naive `IpNet` scan.

use std::fmt::Write;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use auth_sidecar::cache::Lookup;
use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide;
use auth_sidecar::facts::{RequestFacts, Single};
use auth_sidecar::net::CidrSet;
use auth_sidecar::test_util::hmac_key;
use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn secret(_: &str) -> Option<String> {
    Some(String::from_utf8(hmac_key(Algorithm::HS256, "hs").public).expect("ASCII secret"))
}

/// 99 non-matching prefix rules, then the two the benchmark hits.
fn runtime_with_100_rules() -> Runtime {
    let mut yaml = String::from(
        "issuers:\n  - issuer: https://idp.bench\n    audiences: [omni2]\n    keys:\n      - {kid: hs, alg: HS256, secret_env: S}\nrules:\n",
    );
    for i in 0..98 {
        writeln!(yaml, "  - {{name: svc{i}, path_prefix: /svc{i}/api, methods: [GET, POST], action: authenticated}}").unwrap();
    }
    yaml.push_str("  - {name: public, path: /api/v1/public/status, action: public}\n");
    yaml.push_str("  - {name: api, path_prefix: /api/v1, action: authenticated}\n");
    Runtime::from_yaml(&yaml, Path::new("."), &secret).expect("bench config is valid")
}

fn facts<'a>(uri: &'a str, authorization: Option<&'a str>) -> RequestFacts<'a> {
    RequestFacts {
        method: Single::One("GET"),
        uri: Single::One(uri),
        host: Single::One("api.example.test"),
        proto: Single::One("https"),
        forwarded_for: vec!["203.0.113.9"],
        peer: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        authorization: authorization.map_or(Single::Absent, Single::One),
        ..Default::default()
    }
}

fn bench_decide(c: &mut Criterion) {
    let rt = runtime_with_100_rules();
    assert_eq!(rt.policy.rules.len(), 100);
    let token = hmac_key(Algorithm::HS256, "hs").mint(&json!({
        "iss": "https://idp.bench", "aud": "omni2", "sub": "user-1", "role": "user",
        "iat": NOW - 60, "exp": NOW + 600,
    }));
    let auth = format!("Bearer {token}");
    let public = facts("/api/v1/public/status?verbose=1", None);
    let authenticated = facts("/api/v1/mcp/servers/alpha/tools/add/call", Some(&auth));
    assert!(decide(&public, &rt, NOW).decision.is_allow());
    assert!(
        decide(&authenticated, &rt, NOW).decision.is_allow(),
        "token is cached now"
    );

    let mut group = c.benchmark_group("decide");
    group.bench_function("100_rules_last_match_public", |b| {
        b.iter(|| decide(black_box(&public), &rt, NOW).decision.is_allow())
    });
    group.bench_function("100_rules_last_match_cached_token", |b| {
        b.iter(|| {
            decide(black_box(&authenticated), &rt, NOW)
                .decision
                .is_allow()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("cache/get");
    group.bench_function("hit", |b| {
        b.iter(|| matches!(rt.cache.get(black_box(&token), NOW), Lookup::Valid(_)))
    });
    group.finish();
}

fn bench_cidr(c: &mut Criterion) {
    // 100 networks, half v4, half v6; the probe matches none (the full-scan case).
    let nets: Vec<IpNet> = (0..50u32)
        .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
        .chain((0..50u32).map(|i| format!("2001:db8:{i:x}::/48").parse().unwrap()))
        .collect();
    let set = CidrSet::new(nets.iter().copied());
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1));
    assert!(!set.contains(v4) && !set.contains(v6));
    let mut group = c.benchmark_group("policy/cidr");
    group.bench_function("100_nets_v4_typed", |b| {
        b.iter(|| set.contains(black_box(v4)))
    });
    group.bench_function("100_nets_v6_typed", |b| {
        b.iter(|| set.contains(black_box(v6)))
    });
    group.bench_function("100_nets_v4_naive_ipnet_scan", |b| {
        b.iter(|| nets.iter().any(|n| n.contains(&black_box(v4))))
    });
    group.finish();
}

criterion_group!(benches, bench_decide, bench_cidr);
criterion_main!(benches);
