//! `X-Forwarded-Uri` → `split_uri` → `normalize`: never a panic, and every normalised
//! path is one a rule can be matched on safely (the checks below are what the policy's
//! prefix and exact matches assume).
#![no_main]

use auth_sidecar::policy::path::{normalize, split_uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the sidecar as `&str`; other bytes never get this far.
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let (path, _query) = split_uri(uri);
    let Ok(once) = normalize(path) else {
        return;
    };
    check_normal_form(&once, path);
    let twice = normalize(&once).expect("a normalised path normalises again");
    assert_eq!(twice, once, "normalising is not idempotent for {path:?}");
});

fn check_normal_form(out: &str, input: &str) {
    assert!(out.starts_with('/'), "{out:?} from {input:?}: no leading /");
    assert!(!out.contains("//"), "{out:?} from {input:?}: contains //");
    assert!(
        !out.split('/').any(|seg| seg == "." || seg == ".."),
        "{out:?} from {input:?}: dot segment left"
    );
    assert!(
        out.bytes().all(|b| (0x21..0x7f).contains(&b)),
        "{out:?} from {input:?}: not visible ASCII"
    );
    // What stays percent-encoded is upper-case hex of a byte that is not unreserved, so
    // no encoded `.` (or letter) can hide a dot segment or dodge a prefix match.
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .unwrap_or_else(|| panic!("{out:?} from {input:?}: truncated escape"));
        let hex = std::str::from_utf8(hex).expect("visible ASCII");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{out:?} from {input:?}: escape not upper-case hex"
        );
        let byte = u8::from_str_radix(hex, 16).expect("checked hex");
        assert!(
            !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
            "{out:?} from {input:?}: unreserved byte left encoded"
        );
    }
}
