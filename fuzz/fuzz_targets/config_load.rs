//! The config loader: YAML text → a compiled runtime or a list of problems; never a
//! panic, and a refusal always says what is wrong. A runtime that loads then decides one
//! ordinary request, so a value the loader accepts but the request path cannot handle
//! (a limit that overflows, say) shows up here too.
//!
//! Relative file paths resolve against a directory that does not exist, and `${VAR}`
//! reads a fixed map, so a run depends on nothing outside the input.
#![no_main]

use std::path::Path;

use auth_sidecar::config::Runtime;
use auth_sidecar::decide::decide;
use auth_sidecar::facts::{RequestFacts, Single};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_767_225_600;

/// Any `*SECRET*` variable is set (long enough for HS512), so the repo's own configs load.
fn env(name: &str) -> Option<String> {
    if name.contains("SECRET") {
        Some("fuzz-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMN".into())
    } else if name == "EMPTY" {
        Some(String::new())
    } else {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Runtime::from_yaml(text, Path::new("/nonexistent/fuzz-config"), &env) {
        Ok(rt) => {
            let _ = rt.identity_header_names();
            let facts = RequestFacts {
                method: Single::One("GET"),
                uri: Single::One("/api/v1/x?access_token=a.b.c"),
                host: Single::One("api.example"),
                proto: Single::One("https"),
                forwarded_for: vec!["203.0.113.7"],
                authorization: Single::One("Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
                ..Default::default()
            };
            let _ = decide(&facts, &rt, NOW);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a reason: {text:?}");
            for p in &problems.0 {
                assert!(!p.message.is_empty(), "empty problem message: {text:?}");
            }
            let _ = problems.to_string();
        }
    }
});
