//! Fresh tokens for the load scripts: COUNT distinct JWTs (own `sub` and `jti` each), one
//! per line, signed with a private key in PEM (RS256, ES256) or an HMAC secret from an
//! environment variable (HS256). Signing uses every core given, so a few ten thousand RS256
//! tokens take seconds, not minutes.
//!
//!   load-tokens --alg ES256 --key ec.pem --kid ec-1 --iss omni2-dev --aud omni2 --count 100000 --out t.txt

use std::io::Write;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn usage(problem: &str) -> ! {
    eprintln!(
        "load-tokens: {problem}\nusage: load-tokens --alg HS256|RS256|ES256 (--key PEM | --secret-env VAR) --kid KID --iss ISS --aud AUD --count N --out FILE [--prefix P]"
    );
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let mut opts = std::collections::HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            usage(&format!("unexpected {arg:?}"))
        };
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        opts.insert(name.to_owned(), value);
    }
    let get = |name: &str| {
        opts.get(name)
            .cloned()
            .unwrap_or_else(|| usage(&format!("--{name} is required")))
    };
    let (alg, kid, iss, aud, out) = (get("alg"), get("kid"), get("iss"), get("aud"), get("out"));
    let count: usize = get("count")
        .parse()
        .unwrap_or_else(|_| usage("--count: a number"));
    let prefix = opts.get("prefix").cloned().unwrap_or_else(|| "load".into());
    let (algorithm, key) = match alg.as_str() {
        "HS256" => {
            let secret = std::env::var(get("secret-env"))
                .unwrap_or_else(|_| usage("--secret-env names an unset variable"));
            (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            )
        }
        "RS256" | "ES256" => {
            let pem = std::fs::read(get("key"))?;
            let key = if alg == "RS256" {
                EncodingKey::from_rsa_pem(&pem)
            } else {
                EncodingKey::from_ec_pem(&pem)
            };
            let algorithm = if alg == "RS256" {
                Algorithm::RS256
            } else {
                Algorithm::ES256
            };
            (
                algorithm,
                key.unwrap_or_else(|e| usage(&format!("--key: {e}"))),
            )
        }
        other => usage(&format!("--alg {other:?}")),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(kid);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (header, key, iss, aud, prefix) = (&header, &key, &iss, &aud, &prefix);
                s.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|i| {
                            let claims = json!({"iss": iss, "aud": aud, "sub": format!("{prefix}-user-{i}"),
                                "role": "user", "jti": format!("{prefix}-{i}"), "iat": now, "exp": now + 3600});
                            jsonwebtoken::encode(header, &claims, key).expect("sign")
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread"))
            .collect()
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for token in chunks.iter().flatten() {
        writeln!(file, "{token}")?;
    }
    file.flush()
}
