//! `jwks/decide`: the decision for a remote (JWKS) issuer while the IdP is up, beside the same
//! decision while the IdP is down and the sidecar serves its last good keys (fetched an hour
//! earlier, `max_stale` 24 h). Cases: a cached token, a token seen for the first time (ES256
//! signature check), and a token with an unknown `kid` once the cooldown is running (the
//! steady state of a random-kid flood), and the one request per cooldown that pays for a
//! forced fetch. The IdP is a small HTTP server on loopback; "down" means its port is closed
//! (connection refused). A hung IdP costs that one request at most `jwks.timeout`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide_with_keys;
use auth_sidecar::decision::Decision;
use auth_sidecar::facts::{RequestFacts, Single};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.bench";

/// An IdP serving one JWKS document until `stop` is set (then its port is closed).
struct Idp {
    url: String,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Idp {
    fn start(jwks: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{jwks}",
                    jwks.len()
                );
            }
        });
        Idp {
            url: format!("http://{addr}/jwks"),
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the port: from now on connections are refused.
    fn go_down(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept so the thread sees `stop` and drops the listener.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().expect("idp thread");
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.go_down();
    }
}

struct Signer {
    encoding: EncodingKey,
    jwks: String,
}

fn signer() -> Signer {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 keygen");
    let point = pair.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}]});
    Signer {
        encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().expect("pkcs8").as_ref()),
        jwks: jwks.to_string(),
    }
}

impl Signer {
    fn mint(&self, kid: &str, sub: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        let claims = json!({"iss": ISS, "aud": "omni2", "sub": sub, "role": "user",
                            "iat": NOW - 60, "exp": NOW + 86_400});
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("claims encode")
    }
}

fn runtime(jwks_uri: &str, max_stale: &str) -> Runtime {
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [omni2]\n    jwks_uri: {jwks_uri}\n    jwks: {{timeout: 1s, max_stale: {max_stale}}}\nrules:\n  - {{name: api, path_prefix: /api, action: authenticated}}\n"
    );
    Runtime::from_yaml(&yaml, Path::new("."), &|_: &str| None).expect("bench config is valid")
}

fn decide(tokio: &tokio::runtime::Runtime, rt: &Runtime, token: &str, now: i64) -> bool {
    let auth = format!("Bearer {token}");
    let facts = RequestFacts {
        method: Single::One("GET"),
        uri: Single::One("/api/v1/things"),
        authorization: Single::One(&auth),
        ..Default::default()
    };
    let outcome = tokio.block_on(decide_with_keys(black_box(&facts), rt, now));
    matches!(outcome.decision, Decision::Allow { .. })
}

fn bench_outage(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let signer = signer();
    let up = Idp::start(signer.jwks.clone());
    let mut down = Idp::start(signer.jwks.clone());
    let normal = runtime(&up.url, "24h");
    let outage = runtime(&down.url, "24h");
    // For the forced-fetch case the clock runs far ahead: keys stay usable for 10 years.
    let normal_far = runtime(&up.url, "87600h");
    let outage_far = runtime(&down.url, "87600h");
    // All fetch their keys at NOW; then one IdP goes away.
    for rt in [&normal, &outage, &normal_far, &outage_far] {
        assert!(decide(&tokio, rt, &signer.mint("k1", "warmup"), NOW));
    }
    down.go_down();
    // An hour later: the outage runtime serves its last good keys; its first unknown kid
    // tries a fetch (refused) and starts the cooldown, as the normal one's fetch does.
    let later = NOW + 3600;
    for rt in [&normal, &outage] {
        assert!(!decide(&tokio, rt, &signer.mint("unknown", "x"), later));
    }
    assert_eq!(
        outage.issuers[0]
            .remote
            .as_ref()
            .expect("remote")
            .attempts(),
        2,
        "the outage runtime tried (and failed) a fetch"
    );

    let cached = signer.mint("k1", "cached");
    let pool: Vec<String> = (0..512)
        .map(|i| signer.mint("k1", &format!("user-{i}")))
        .collect();
    let unknown: Vec<String> = (0..512)
        .map(|i| signer.mint(&format!("random-{i:08x}"), "x"))
        .collect();
    let mut group = c.benchmark_group("jwks/decide");
    for (name, rt) in [("idp_up", &normal), ("idp_down_last_good_keys", &outage)] {
        assert!(decide(&tokio, rt, &cached, later));
        group.bench_function(format!("{name}/cached_token"), |b| {
            b.iter(|| decide(&tokio, rt, &cached, later))
        });
        let mut i = 0;
        group.bench_function(format!("{name}/new_token_es256"), |b| {
            b.iter_batched(
                || {
                    // A token the cache has not seen: clear it so each one is verified.
                    rt.cache.clear();
                    i += 1;
                    pool[i % pool.len()].clone()
                },
                |token| assert!(decide(&tokio, rt, &token, later)),
                BatchSize::SmallInput,
            )
        });
        let mut j = 0;
        group.bench_function(format!("{name}/unknown_kid_in_cooldown"), |b| {
            b.iter(|| {
                j += 1;
                assert!(!decide(&tokio, rt, &unknown[j % unknown.len()], later));
            })
        });
    }
    // One request per cooldown pays for a forced fetch: a successful one (IdP up) or a
    // refused connection (IdP down). The clock moves one cooldown per iteration; keys stay
    // usable (max_stale 10 years).
    for (name, rt) in [
        ("idp_up", &normal_far),
        ("idp_down_last_good_keys", &outage_far),
    ] {
        let mut now = NOW;
        let mut k = 0u64;
        group.bench_function(format!("{name}/unknown_kid_forced_fetch"), |b| {
            b.iter_batched(
                || {
                    // A kid never seen, so the negative kid cache cannot answer.
                    k += 1;
                    now += 30;
                    (signer.mint(&format!("fresh-{k}"), "x"), now)
                },
                |(token, now)| assert!(!decide(&tokio, rt, &token, now)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    let fetches = |rt: &Runtime| rt.issuers[0].remote.as_ref().expect("remote").attempts();
    assert_eq!(
        (fetches(&normal), fetches(&outage)),
        (2, 2),
        "no fetch on the measured path"
    );
}

criterion_group!(benches, bench_outage);
criterion_main!(benches);
