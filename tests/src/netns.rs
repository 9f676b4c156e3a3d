//! Compose's two networks rebuilt with Linux network namespaces (`ip netns`, veth pairs;
//! needs root): an outside client host, Traefik's host on both networks with IP forwarding
//! off, and one internal host for omni2, the sidecar, the MCP server and Prometheus, with no
//! route out. Namespaces get unique names and are deleted on drop, also when a test fails.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::http::{Request, Response, Target, send};

/// The outside network: 198.18.0.0/24 (benchmarking space, RFC 2544), outside every range
/// `internal-only` lists (127.0.0.1/32, ::1/128, 10/8, 172.16/12, 192.168/16).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Traefik's address on the outside network.
pub const TRAEFIK_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Traefik's address on the internal network (10.89.0.0/24, inside `internal-only`).
pub const TRAEFIK_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The internal host (omni2, sidecar, MCP server, Prometheus).
pub const INTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

/// `ip ARGS`, `Err` with its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Result<Netns, String> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command run inside this namespace (`ip netns exec NAME program`); `ip` execs the
    /// program, so the child's PID is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Reads a /proc/sys value inside the namespace.
    pub fn sysctl(&self, key: &str) -> Result<String, String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = self
            .command("cat")
            .arg(&path)
            .output()
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn set_sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let status = self
            .command("sh")
            .args(["-c", &format!("echo {value} > {path}")])
            .status()
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then_some(())
            .ok_or(format!("cannot set {key} in {}", self.name))
    }

    /// Runs `f` on a fresh thread that has joined this namespace, with its own runtime, so
    /// the sockets it opens live here. The test's own threads never change namespace.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let path = format!("/run/netns/{}", self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = (|| {
                let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {path}: {e}"))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(f())
            })();
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| "namespace thread panicked".to_owned())?
    }

    /// One HTTP request from inside this namespace.
    pub async fn send(&self, to: SocketAddr, req: &Request) -> Result<Response, String> {
        let req = req.clone();
        self.run(move || async move { send(&Target::Tcp(to), &req).await })
            .await
    }

    /// Whether a TCP connection to `to` opens from here within `bound` (`Err` says why not:
    /// refused, no route, or nothing within the bound).
    pub async fn connect(&self, to: SocketAddr, bound: Duration) -> Result<(), String> {
        self.run(move || async move {
            match tokio::time::timeout(bound, tokio::net::TcpStream::connect(to)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {bound:?}")),
            }
        })
        .await
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth ends inside it (and so their peers).
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// The three hosts and two networks.
pub struct Topology {
    pub outside: Netns,
    pub gateway: Netns,
    pub internal: Netns,
}

impl Topology {
    /// Builds the topology; `Err` says why (not root, no `ip`, no netns support).
    pub fn create() -> Result<Topology, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "e2e{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::Relaxed) % 10
        );
        // Created one by one, so those already made are dropped (deleted) on an error.
        let outside = Netns::create(format!("{id}o"))?;
        let gateway = Netns::create(format!("{id}g"))?;
        let internal = Netns::create(format!("{id}i"))?;
        let t = Topology {
            outside,
            gateway,
            internal,
        };
        t.link(
            &t.outside,
            CLIENT_IP,
            &t.gateway,
            TRAEFIK_OUTSIDE_IP,
            &format!("{id}e"),
        )?;
        t.link(
            &t.gateway,
            TRAEFIK_INSIDE_IP,
            &t.internal,
            INTERNAL_IP,
            &format!("{id}n"),
        )?;
        // The client even routes the internal network via Traefik's host: only forwarding
        // (off) could carry it further. The internal host has no route out at all.
        t.outside.exec_ip(&[
            "route",
            "add",
            "10.89.0.0/24",
            "via",
            &TRAEFIK_OUTSIDE_IP.to_string(),
        ])?;
        t.gateway.set_sysctl("net.ipv4.ip_forward", "0")?;
        t.gateway.set_sysctl("net.ipv6.conf.all.forwarding", "0")?;
        Ok(t)
    }

    /// A veth pair `{name}a` (in `a`, `a_ip`/24) <-> `{name}b` (in `b`, `b_ip`/24).
    fn link(
        &self,
        a: &Netns,
        a_ip: Ipv4Addr,
        b: &Netns,
        b_ip: Ipv4Addr,
        name: &str,
    ) -> Result<(), String> {
        let (end_a, end_b) = (format!("{name}a"), format!("{name}b"));
        ip(&[
            "link", "add", &end_a, "type", "veth", "peer", "name", &end_b,
        ])?;
        let moved = ip(&["link", "set", &end_a, "netns", &a.name])
            .and_then(|()| ip(&["link", "set", &end_b, "netns", &b.name]));
        if let Err(e) = moved {
            let _ = ip(&["link", "del", &end_a]);
            return Err(e);
        }
        for (ns, end, addr) in [(a, &end_a, a_ip), (b, &end_b, b_ip)] {
            ns.exec_ip(&["addr", "add", &format!("{addr}/24"), "dev", end])?;
            ns.exec_ip(&["link", "set", end, "up"])?;
        }
        Ok(())
    }
}
