//! Processes the tests start: a guard that stops the child by its PID on drop and keeps
//! its output in a log file, shown when a start-up check fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::wait::{eventually_blocking, poll_blocking};

/// A child process stopped (SIGTERM, then SIGKILL) by its PID when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    /// Where stdout and stderr go; `None` for an adopted child (its pipes are the test's).
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `log`.
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
            log: Some(log),
        }
    }

    /// Guards a child the test spawned itself (e.g. with piped output it reads).
    pub fn adopt(name: &str, child: Child) -> Proc {
        Proc {
            name: name.into(),
            child: Some(child),
            log: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
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

    /// SIGKILL and reap, at once (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself and returns its status; panics (with the
    /// log) if it has not within `deadline`.
    #[track_caller]
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let name = self.name.clone();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{name} was stopped"));
        let status = eventually_blocking(&format!("{name} to exit"), deadline, || {
            match child.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        });
        self.child = None;
        status
    }

    /// SIGTERM, up to 5 s for a clean exit (nginx's master stops its workers), then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let exited = poll_blocking(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if exited.is_ok() {
                return;
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

/// Waits until a line of `proc`'s log contains `needle`, and returns that line. Fails with
/// the whole log if the process exits first or the line does not come within `deadline`.
#[track_caller]
pub fn wait_for_log_line(proc: &mut Proc, needle: &str, deadline: Duration) -> String {
    eventually_blocking(
        &format!("{:?} in {}'s log", needle, proc.name),
        deadline,
        || {
            let log = proc.log();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_owned());
            }
            match proc.check_alive() {
                Err(exited) => panic!("{exited}"),
                Ok(()) => Err(format!("not yet; log so far:\n{log}")),
            }
        },
    )
}

/// Waits until `proc` accepts TCP connections on `addr` (bounded), failing at once if it
/// exits first.
pub async fn wait_listening(proc: &mut Proc, addr: std::net::SocketAddr, what: &str) {
    crate::wait::eventually(what, std::time::Duration::from_secs(30), || {
        proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
        async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &tempfile::TempDir) -> Proc {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        Proc::spawn("sh", cmd, dir.path().join("sh.log"))
    }

    #[test]
    fn waits_for_a_log_line_and_stops_by_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut p = sh("echo starting; echo 'listening on 1'; exec sleep 60", &dir);
        let line = wait_for_log_line(&mut p, "listening", Duration::from_secs(10));
        assert_eq!(line, "listening on 1");
        let pid = p.pid().expect("running") as i32;
        drop(p);
        // The PID is reaped: signal 0 finds no such process.
        assert!(
            kill(Pid::from_raw(pid), None).is_err(),
            "pid {pid} still alive"
        );
    }

    #[test]
    fn an_adopted_child_reports_its_exit_status() {
        let child = Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .expect("sh");
        let mut p = Proc::adopt("sh", child);
        assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(3));
    }

    #[test]
    #[should_panic(expected = "exited")]
    fn a_process_that_exits_fails_the_wait_with_its_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut p = sh("echo bye; exit 3", &dir);
        wait_for_log_line(&mut p, "never printed", Duration::from_secs(10));
    }
}
