//! Processes the tests start: release binaries, the repository root, `which`; free ports,
//! kill-by-PID guards and `eventually` from `test-support`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// Free ports, `eventually` and the `Proc` guard are the workspace's shared test helpers.
pub use test_support::{Proc, eventually, free_addr, wait_listening};

/// The release binaries the tests run: (package, binary).
const RELEASE_BINARIES: [(&str, &str); 2] =
    [("auth-sidecar", "auth-sidecar"), ("omni2-core", "omni2")];

/// `target/release/<bin>`, after one `cargo build --release` of every binary the tests run
/// (one cargo run, so shared dependencies build once and in parallel). `cargo build` is a
/// no-op when they are fresh, so a stale binary is never tested and `cargo test` alone works
/// on a fresh checkout.
fn release_binary(bin: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let release = BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(repo_root()).args(["build", "--release"]);
            for (package, bin) in RELEASE_BINARIES {
                cmd.args(["-p", package, "--bin", bin]);
            }
            let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "{cmd:?} failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), PathBuf::from);
            Ok(target.join("release"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"));
    release.join(bin)
}

/// `target/release/auth-sidecar`, built if missing or stale.
pub fn sidecar_binary() -> PathBuf {
    release_binary("auth-sidecar")
}

/// `target/release/omni2`, built if missing or stale.
pub fn omni2_binary() -> PathBuf {
    release_binary("omni2")
}

/// Whether a program is on PATH (gateways are installed by `.ci/run`).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
