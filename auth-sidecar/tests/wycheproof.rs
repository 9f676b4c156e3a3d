//! Conformance: Wycheproof's JSON Web Signature and JSON Web Key vectors
//! (vendored in `tests/fixtures/wycheproof/`, Apache-2.0), run through the sidecar's own JWS parser, key loader
//! and signature check.
//!
//! The vectors' payloads are not JWT claim sets (e.g. `foo`), so this suite stops at the
//! signature: a vector is *accepted* when `jwt::parse` succeeds, the key set yields a key
//! for the header's `kid`/`alg`, and `jwt::verify_signature` passes. Claim checks are
//! covered by the decide and adversarial suites. No clock is involved at this level.
//!
//! Where we decide differently from a vector, the vector is listed in [`DIFFERENCES`] with
//! the reason; the test fails if a listed vector stops differing (so the list stays true)
//! or an unlisted one differs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use auth_sidecar::jwt;
use auth_sidecar::keys::KeySet;
use serde::Deserialize;
use serde_json::Value;

/// `(file, tcId, why we decide differently)`.
const DIFFERENCES: &[(&str, u64, &str)] = &[
    (
        SIGNATURES,
        346,
        "RFC 7520 Figure 20: a PS384 token checked with a JWK that declares alg PS256; \
         every key is pinned to its declared algorithm, so the token is refused (alg_mismatch)",
    ),
    (SIGNATURES, 350, "same as 346, key with key_ops"),
    (
        SIGNATURES,
        347,
        "RFC 7520 Figure 27: ES512 (P-521) is outside the supported set \
         (HS/RS/PS 256-512, ES256/384, EdDSA); the key is refused at load",
    ),
    (SIGNATURES, 351, "same as 347, key with key_ops"),
    (
        SIGNATURES,
        367,
        "defective vector: labelled invalidBase64Padding, but the stored JWS is canonical \
         unpadded base64url, byte-identical in form to a valid token, and its MAC verifies",
    ),
    (SIGNATURES, 370, "defective vector: as 367, for the payload"),
    (
        SIGNATURES,
        372,
        "defective vector: labelled valid, but a '?' sits inside the base64url header; \
         RFC 7515 §2 base64url has no such character and we decode strictly",
    ),
    (SIGNATURES, 373, "defective vector: as 372, for the payload"),
    (
        KEYS,
        7,
        "ROCA-weak RSA modulus (CVE-2017-15361): detecting it needs a fingerprint test that \
         neither aws-lc-rs nor jsonwebtoken performs; keys come from the operator's own IdP, \
         which is where ROCA keys must be caught",
    ),
];

const SIGNATURES: &str = "json_web_signature_test.json";
const KEYS: &str = "json_web_key_test.json";

#[derive(Deserialize)]
struct Suite {
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    comment: String,
    public: Option<Value>,
    private: Option<Value>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    #[serde(rename = "tcId")]
    id: u64,
    comment: String,
    jws: Value,
    result: String,
    #[serde(default)]
    flags: Vec<String>,
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wycheproof")
}

fn load(file: &str) -> Suite {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The verification key material of a group as a JWKS document: the public key when the
/// group has one, else the private one (HMAC); a bare JWK becomes a one-key set.
fn key_set_json(group: &Group) -> String {
    let key = group
        .public
        .as_ref()
        .or(group.private.as_ref())
        .expect("every group carries a key");
    if key.get("keys").is_some() {
        key.to_string()
    } else {
        serde_json::json!({ "keys": [key] }).to_string()
    }
}

/// Our verdict on one compact JWS with one key set: `Ok` when accepted, else why not.
fn verdict(key_set: &Result<KeySet, String>, jws: &Value) -> Result<(), String> {
    let keys = key_set
        .as_ref()
        .map_err(|e| format!("key set refused: {e}"))?;
    // JSON serialization (an object) is not a compact JWS: the sidecar only reads bearer
    // tokens, which are compact by definition (RFC 6750 §2.1, RFC 7519 §1).
    let compact = jws.as_str().ok_or("not compact serialization")?;
    let parsed = jwt::parse(compact).map_err(|r| format!("parse: {}", r.as_str()))?;
    let key = keys
        .find(parsed.kid.as_deref(), parsed.alg)
        .ok_or("no key for kid/alg")?;
    jwt::verify_signature(&parsed, key).map_err(|r| format!("verify: {}", r.as_str()))
}

/// Loads a key set the way a local `jwks_file` is loaded (symmetric keys allowed).
fn key_set(json: &str) -> Result<KeySet, String> {
    let (set, skipped) = KeySet::from_jwks(json, true)?;
    if set.is_empty() {
        return Err(format!("no usable key: {skipped:?}"));
    }
    Ok(set)
}

/// Runs every vector of `file`; returns the unexpected outcomes and counts.
fn run(file: &str) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let suite = load(file);
    let mut unexpected = Vec::new();
    let mut counts = BTreeMap::new();
    for group in &suite.groups {
        let keys = key_set(&key_set_json(group));
        for case in &group.tests {
            let got = verdict(&keys, &case.jws);
            let want_valid = case.result == "valid";
            let documented = DIFFERENCES
                .iter()
                .any(|(f, id, _)| *f == file && *id == case.id);
            let differs = got.is_ok() != want_valid;
            *counts
                .entry(if got.is_ok() { "accepted" } else { "rejected" })
                .or_default() += 1;
            if differs != documented {
                unexpected.push(format!(
                    "{file} tcId {} ({} / {}, flags {:?}): expected {}, got {:?}{}",
                    case.id,
                    group.comment,
                    case.comment,
                    case.flags,
                    case.result,
                    got,
                    if documented {
                        " (listed in DIFFERENCES but now agrees: remove it)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    (unexpected, counts)
}

#[track_caller]
fn assert_conforms(file: &str, min_cases: usize) {
    let (unexpected, counts) = run(file);
    let total: usize = counts.values().sum();
    assert!(
        total >= min_cases,
        "{file}: only {total} vectors ran (expected at least {min_cases})"
    );
    assert!(
        unexpected.is_empty(),
        "{file}: {} of {total} vectors decided differently:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    eprintln!("{file}: {total} vectors, {counts:?}");
}

#[test]
fn json_web_signature_vectors() {
    assert_conforms(SIGNATURES, 400);
}

#[test]
fn json_web_key_vectors() {
    assert_conforms(KEYS, 26);
}

#[test]
fn the_harness_can_tell_valid_from_invalid() {
    // Guard against a harness that rejects everything: the valid vectors must be accepted.
    let suite = load(SIGNATURES);
    let mut accepted = 0;
    for group in &suite.groups {
        let keys = key_set(&key_set_json(group));
        for case in group.tests.iter().filter(|c| c.result == "valid") {
            if verdict(&keys, &case.jws).is_ok() {
                accepted += 1;
            }
        }
    }
    assert!(accepted >= 40, "only {accepted} valid vectors accepted");
}
