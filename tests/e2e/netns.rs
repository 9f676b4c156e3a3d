//! Real network isolation, the way compose builds it: network namespaces for an outside
//! client, Traefik's host (both networks, forwarding off) and the internal host (omni2, the
//! sidecar, the MCP example, Prometheus), every check through real sockets. Fails, never skips, when the
//! namespaces cannot be built.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use e2e::http::{Request, Response};
use e2e::netns::{CLIENT_IP, INTERNAL_IP, Netns, TRAEFIK_INSIDE_IP, TRAEFIK_OUTSIDE_IP, Topology};
use e2e::process::{Proc, eventually, omni2_binary, repo_root, sidecar_binary};
use e2e::stack::{
    IDENTITY_SECRET, compile_shipped_sidecar_config, shipped_omni2_config, shipped_sidecar_config,
    sidecar_env, token_for,
};
use e2e::traefik::{Wiring, routers_loaded, shipped_router_names, write_config};

fn at(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Polls `GET path` on `to` from inside `ns` until it answers `want`.
async fn wait_for(ns: &Netns, proc: &mut Proc, to: SocketAddr, path: &str, want: u16) {
    eventually(
        &format!("{path} on {to} in {}", ns.name),
        Duration::from_secs(30),
        || {
            proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
            async move {
                let r = ns.send(to, &Request::get(path)).await?;
                (r.status == want)
                    .then_some(())
                    .ok_or(format!("{}: {}", r.status, r.text()))
            }
        },
    )
    .await;
}

fn spawn_in(_ns: &Netns, name: &str, cmd: Command, dir: &std::path::Path) -> Proc {
    Proc::spawn(name, cmd, dir.join(format!("{name}.log")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_isolation_only_traefik_answers_from_outside() {
    let topo = Topology::create().unwrap_or_else(|e| {
        panic!(
            "cannot build the isolation test's network namespaces ({e}); it needs root and \
             iproute2 (`ip netns`), which .ci/run provides"
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let (sidecar_bin, omni2_bin) =
        tokio::task::spawn_blocking(|| (sidecar_binary(), omni2_binary()))
            .await
            .expect("build task");
    let (inside, gateway, outside) = (&topo.internal, &topo.gateway, &topo.outside);

    // The internal host: MCP example on its loopback, the sidecar and omni2 on 10.89.0.2.
    let (verify, admin, omni2) = (
        at(INTERNAL_IP, 8700),
        at(INTERNAL_IP, 8701),
        at(INTERNAL_IP, 8000),
    );
    let mut mcp_cmd = inside.command("python3");
    mcp_cmd
        .arg(repo_root().join("compose/mcp-example/server.py"))
        .args(["--host", "127.0.0.1", "--port", "9000"]);
    let mcp = spawn_in(inside, "mcp-example", mcp_cmd, dir);
    let mut sidecar_cmd = inside.command(&sidecar_bin);
    sidecar_cmd
        .args(["serve", "--workers", "1", "--config"])
        .arg(shipped_sidecar_config())
        .envs(sidecar_env(verify, admin));
    let mut sidecar = spawn_in(inside, "auth-sidecar", sidecar_cmd, dir);
    let mut omni2_cmd = inside.command(&omni2_bin);
    omni2_cmd
        .arg("--config")
        .arg(shipped_omni2_config())
        .args(["--listen", &omni2.to_string(), "--workers", "1"])
        .env("OMNI2_IDENTITY_SECRET", IDENTITY_SECRET)
        .env("OMNI2_MCP_EXAMPLE_URL", "http://127.0.0.1:9000/mcp");
    let mut omni2_proc = spawn_in(inside, "omni2", omni2_cmd, dir);
    wait_for(inside, &mut sidecar, admin, "/readyz", 200).await;
    wait_for(inside, &mut omni2_proc, omni2, "/health", 200).await;

    // Traefik's host: the published entry points on every address, the metrics entry point
    // on the internal network only, the API on its loopback (compose: 127.0.0.1 on the host).
    let tdir = dir.join("traefik");
    let wiring = Wiring {
        web: "0.0.0.0:80".parse().expect("addr"),
        websecure: "0.0.0.0:443".parse().expect("addr"),
        metrics: at(TRAEFIK_INSIDE_IP, 8082),
        api: "127.0.0.1:8080".parse().expect("addr"),
        sidecar: verify,
        backend: omni2,
        dynamic_dir: tdir.join("dynamic"),
    };
    std::fs::create_dir_all(&tdir).expect("traefik dir");
    let config = write_config(&tdir, &wiring);
    let mut traefik_cmd = gateway.command("traefik");
    traefik_cmd.arg(format!("--configFile={}", config.display()));
    let mut traefik = spawn_in(gateway, "traefik", traefik_cmd, dir);
    let want = shipped_router_names();
    eventually(
        "traefik routers in its namespace",
        Duration::from_secs(30),
        || {
            traefik.check_alive().unwrap_or_else(|e| panic!("{e}"));
            let want = want.clone();
            async move {
                let r = gateway
                    .send(wiring.api, &Request::get("/api/http/routers"))
                    .await?;
                routers_loaded(&r, &want)
            }
        },
    )
    .await;
    let logs = || {
        format!(
            "--- traefik:\n{}\n--- sidecar:\n{}\n--- omni2:\n{}\n--- mcp:\n{}",
            traefik.log(),
            sidecar.log(),
            omni2_proc.log(),
            mcp.log()
        )
    };

    // Forwarding is off on Traefik's host.
    assert_eq!(gateway.sysctl("net.ipv4.ip_forward").as_deref(), Ok("0"));

    let rt = compile_shipped_sidecar_config();
    let (user, root) = (
        token_for(&rt, "alice", "user"),
        token_for(&rt, "root", "admin"),
    );
    let web_out = at(TRAEFIK_OUTSIDE_IP, 80);
    let web_in = at(TRAEFIK_INSIDE_IP, 80);
    let bound = Duration::from_secs(2);

    // From outside: Traefik's published ports answer, and through them omni2 (so Traefik
    // reaches the internal host) ...
    let r = outside.send(web_out, &Request::get("/health")).await;
    assert_eq!(
        r.as_ref().map(|r| r.status.as_u16()),
        Ok(200),
        "{r:?}\n{}",
        logs()
    );
    let r = outside
        .send(web_out, &Request::get("/api/v1/mcp/servers").bearer(&user))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), logs());
    assert_eq!(r.json()["servers"][0]["name"], "example", "{}", r.text());
    outside
        .connect(at(TRAEFIK_OUTSIDE_IP, 443), bound)
        .await
        .expect("websecure is published");
    // ... and nothing else: not Traefik's unpublished ports, not the internal host.
    for (what, addr) in [
        (
            "Traefik metrics on its outside address",
            at(TRAEFIK_OUTSIDE_IP, 8082),
        ),
        (
            "Traefik API on its outside address",
            at(TRAEFIK_OUTSIDE_IP, 8080),
        ),
        ("omni2", omni2),
        ("the sidecar's verify port", verify),
        ("the sidecar's admin port", admin),
    ] {
        let reached = outside.connect(addr, bound).await;
        assert!(
            reached.is_err(),
            "{what} ({addr}) is reachable from outside"
        );
        println!(
            "netns: outside -> {what} ({addr}): {}",
            reached.unwrap_err()
        );
    }
    // The internal host has no route out.
    let out = inside.connect(at(CLIENT_IP, 80), bound).await;
    assert!(
        out.is_err(),
        "the internal host reaches the outside network"
    );
    // Traefik's host reaches both networks (the sidecar's admin port, directly).
    let r = gateway.send(admin, &Request::get("/readyz")).await;
    assert_eq!(r.as_ref().map(|r| r.status.as_u16()), Ok(200), "{r:?}");

    // internal-only (omni2-cache): refused from outside, spoofed headers or not ...
    let cache = || Request::get("/api/v1/cache").bearer(&root);
    for spoof in [
        None,
        Some(INTERNAL_IP.to_string()),
        Some("127.0.0.1".to_owned()),
    ] {
        let mut req = cache();
        if let Some(ip) = &spoof {
            req = req.header("X-Forwarded-For", ip).header("X-Real-Ip", ip);
        }
        let r: Response = outside
            .send(web_out, &req)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
        assert_eq!(
            r.status,
            403,
            "from outside (spoofed {spoof:?}): {}",
            r.text()
        );
    }
    // ... admitted from the internal network.
    let r = inside
        .send(web_in, &cache())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    assert_eq!(r.status, 200, "from inside: {}\n{}", r.text(), logs());

    // Prometheus on the internal host scrapes as compose/prometheus.yml does: the sidecar's
    // admin port, omni2 and Traefik's metrics entry point (on Traefik's internal address).
    let pdir = dir.join("prometheus");
    std::fs::create_dir_all(&pdir).expect("prometheus dir");
    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, target) in [
        ("auth-sidecar", admin),
        ("omni2", omni2),
        ("traefik", wiring.metrics),
    ] {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ));
    }
    std::fs::write(pdir.join("prometheus.yml"), config).expect("prometheus.yml");
    let prom_addr = at(INTERNAL_IP, 9090);
    let mut prom_cmd = inside.command("prometheus");
    prom_cmd
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"));
    let mut prom = spawn_in(inside, "prometheus", prom_cmd, &pdir);
    wait_for(inside, &mut prom, prom_addr, "/-/ready", 200).await;
    eventually(
        "Prometheus up == 1 for every job",
        Duration::from_secs(30),
        || async {
            let r = inside
                .send(prom_addr, &Request::get("/api/v1/query?query=up"))
                .await?;
            let body = r.json();
            let up = e2e::stack::up_by_job(&body);
            ["auth-sidecar", "omni2", "traefik"]
                .iter()
                .all(|job| up.iter().any(|(j, v)| j == job && v == "1"))
                .then_some(())
                .ok_or(format!("up = {up:?}"))
        },
    )
    .await;
    // Prometheus is internal too: not reachable from outside.
    assert!(
        outside.connect(prom_addr, bound).await.is_err(),
        "Prometheus reachable from outside"
    );

    // The spoofed headers change nothing for the sidecar either: the same 200 as without.
    let spoofed = Request::get("/api/v1/mcp/servers")
        .bearer(&user)
        .header("X-Forwarded-For", &INTERNAL_IP.to_string())
        .header("X-Real-Ip", &INTERNAL_IP.to_string());
    let r = outside.send(web_out, &spoofed).await.expect("spoofed");
    assert_eq!(r.status, 200, "{}", r.text());
}
