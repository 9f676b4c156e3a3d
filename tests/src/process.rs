//! Processes the tests start: free ports, release binaries, kill-by-PID guards, `eventually`.

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A loopback address on a port that was free a moment ago. Another process can take it
/// before ours binds it; the start-up checks then fail loudly instead of hanging.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// Polls `probe` every 50 ms until it returns `Ok`, or panics with the last error after
/// `deadline`. For waiting on real processes only.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= until => {
                panic!("{what}: still failing after {deadline:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) by its PID when dropped. Its stdout and
/// stderr go to a log file, shown when a start-up check fails.
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with output to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Err` with the log when the process has already exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was stopped", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); log:\n{}",
                self.name,
                self.log()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// Sends `signal` to the process (e.g. SIGSTOP).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGTERM, up to 5 s for a clean exit (nginx's master stops its workers), then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let until = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

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
