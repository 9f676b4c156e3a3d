//! The gateways of the matrix: real Traefik with the shipped config ([`crate::traefik`]), and
//! nginx `auth_request`, Caddy's expanded `forward_auth`, Envoy `ext_authz`, configured as in
//! the contract §4.2 with our identity headers; each in its own temporary directory on free
//! loopback ports.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::http::{Request, Target, send};
use crate::process::{Proc, eventually, free_addr, which};

/// Which gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Traefik,
    Nginx,
    Caddy,
    Envoy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Traefik => "traefik",
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
            Kind::Envoy => "envoy",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Traefik => "traefik",
            Kind::Nginx => "/usr/sbin/nginx",
            Kind::Caddy => "caddy",
            Kind::Envoy => "envoy",
        }
    }

    /// Whether the gateway is installed (`.ci/run` installs all four).
    pub fn installed(self) -> bool {
        which(self.program()).is_some()
    }

    /// Whether the gateway relays the sidecar's deny body (nginx replaces it with its own).
    pub fn relays_deny_body(self) -> bool {
        self != Kind::Nginx
    }
}

/// What the gateway forwards allowed requests to.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A running gateway.
pub struct Gateway {
    pub kind: Kind,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Traefik's `metrics` entry point (Traefik only).
    pub traefik_metrics: Option<SocketAddr>,
    proc: Proc,
}

impl Gateway {
    /// Writes the config into `dir`, starts the gateway and waits until it answers.
    /// `identity` lists the header names the sidecar emits on allow (Traefik runs the
    /// shipped `authResponseHeaders` instead; `tests/e2e/deploy.rs` checks they are equal).
    pub async fn start(
        kind: Kind,
        dir: &Path,
        sidecar: SocketAddr,
        upstream: &Upstream,
        identity: &[String],
    ) -> Gateway {
        if kind == Kind::Traefik {
            let Upstream::Tcp(backend) = upstream else {
                panic!("Traefik proxies to TCP only; start the backend on a TCP port");
            };
            let t = crate::traefik::Traefik::start(dir, sidecar, *backend).await;
            return Gateway {
                kind,
                addr: t.addr(),
                traefik_metrics: Some(t.wiring.metrics),
                proc: t.into_proc(),
            };
        }
        let dir = dir.join(kind.name());
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let addr = free_addr();
        let log = dir.join("gateway.log");
        let wiring = Wiring {
            dir: &dir,
            addr,
            sidecar,
            upstream,
            identity,
        };
        let cmd = match kind {
            Kind::Nginx => nginx_command(&wiring),
            Kind::Caddy => caddy_command(&wiring),
            Kind::Envoy => envoy_command(&wiring),
            Kind::Traefik => unreachable!("started above"),
        };
        let mut proc = Proc::spawn(kind.name(), cmd, log);
        eventually(
            &format!("{} listening on {addr}", kind.name()),
            Duration::from_secs(30),
            || {
                // A gateway that exited (bad config, port taken) fails at once.
                proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
                async move {
                    // Any HTTP answer means the listener and config are up.
                    send(&Target::Tcp(addr), &Request::get("/__gateway_ready"))
                        .await
                        .map(|_| ())
                }
            },
        )
        .await;
        Gateway {
            kind,
            addr,
            traefik_metrics: None,
            proc,
        }
    }

    pub fn target(&self) -> Target {
        Target::Tcp(self.addr)
    }

    /// The gateway's log (shown on failures).
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// What a gateway config connects: its directory and address, the sidecar, the upstream
/// and the identity headers to pass on.
#[derive(Clone, Copy)]
struct Wiring<'a> {
    dir: &'a Path,
    addr: SocketAddr,
    sidecar: SocketAddr,
    upstream: &'a Upstream,
    identity: &'a [String],
}

fn nginx_command(w: &Wiring) -> Command {
    let Wiring {
        dir,
        addr,
        sidecar,
        upstream,
        identity,
    } = *w;
    let upstream = match upstream {
        Upstream::Tcp(a) => format!("http://{a}"),
        Upstream::Unix(p) => format!("http://unix:{}:", p.display()),
    };
    // Workers switch to `user` only when the master runs as root; then keep root so they
    // can reach the temporary directory and the unix socket.
    let user = if nix::unistd::geteuid().is_root() {
        "user root root;"
    } else {
        ""
    };
    let mut set_vars = String::new();
    let mut set_headers = String::new();
    for (i, name) in identity.iter().enumerate() {
        let var = name.to_ascii_lowercase().replace('-', "_");
        let _ = writeln!(
            set_vars,
            "            auth_request_set $fa_{i} $upstream_http_{var};"
        );
        // An empty value removes the header: the client's copy never passes.
        let _ = writeln!(set_headers, "            proxy_set_header {name} $fa_{i};");
    }
    let d = dir.display();
    let conf = format!(
        r#"{user}
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen {addr};
        location = /_fa {{
            internal;
            proxy_pass http://{sidecar}/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length     "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Forwarded-Proto  $scheme;
            proxy_set_header X-Forwarded-Host   $http_host;
            proxy_set_header X-Forwarded-Port   $server_port;
            proxy_set_header X-Forwarded-Uri    $request_uri;
            proxy_set_header X-Forwarded-For    $remote_addr;
            proxy_set_header X-Forwarded-Prefix "";
            proxy_set_header X-Forwarded-Server "";
            proxy_set_header X-Real-Ip          "";
            proxy_connect_timeout 30s;
            proxy_read_timeout    30s;
        }}
        location / {{
            auth_request /_fa;
{set_vars}{set_headers}            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_pass {upstream};
        }}
    }}
}}
"#
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let mut cmd = Command::new(Kind::Nginx.program());
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"]);
    cmd
}

fn caddy_command(w: &Wiring) -> Command {
    let Wiring {
        dir,
        addr,
        sidecar,
        upstream,
        identity,
    } = *w;
    let upstream = match upstream {
        Upstream::Tcp(a) => a.to_string(),
        Upstream::Unix(p) => format!("unix/{}", p.display()),
    };
    let mut matchers = String::new();
    let mut deletes = String::new();
    let mut sets = String::new();
    for (i, name) in identity.iter().enumerate() {
        let _ = writeln!(
            matchers,
            "\t\t\t\t@has{i} expression `{{http.reverse_proxy.header.{name}}} != null`"
        );
        let _ = writeln!(deletes, "\t\t\t\t\trequest_header -{name}");
        let _ = writeln!(
            sets,
            "\t\t\t\t\trequest_header @has{i} {name} {{http.reverse_proxy.header.{name}}}"
        );
    }
    let conf = format!(
        r#"{{
	admin off
	auto_https off
}}
http://{addr} {{
	bind 127.0.0.1
	route {{
		reverse_proxy {sidecar} {{
			method GET
			rewrite /verify?
			header_up Host {{upstream_hostport}}
			header_up X-Forwarded-Method {{method}}
			header_up X-Forwarded-Uri {{uri}}
			header_up X-Forwarded-Port {port}
			header_up -X-Forwarded-Prefix
			header_up -X-Real-Ip
			header_up -Upgrade
			header_up -Connection
			transport http {{
				response_header_timeout 30s
			}}
			@good status 2xx
			handle_response @good {{
{matchers}				route {{
{deletes}{sets}				}}
			}}
		}}
		reverse_proxy {upstream}
	}}
}}
"#,
        port = addr.port()
    );
    let path = dir.join("Caddyfile");
    std::fs::write(&path, conf).expect("write Caddyfile");
    let mut cmd = Command::new(Kind::Caddy.program());
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        // Caddy keeps state under XDG dirs; keep it in the temp dir.
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOME", dir);
    cmd
}

fn envoy_command(w: &Wiring) -> Command {
    let Wiring {
        dir,
        addr,
        sidecar,
        upstream,
        identity,
    } = *w;
    let backend_address = match upstream {
        Upstream::Tcp(a) => format!(
            "socket_address: {{address: {}, port_value: {}}}",
            a.ip(),
            a.port()
        ),
        Upstream::Unix(p) => format!("pipe: {{path: {}}}", p.display()),
    };
    let mut removes = String::new();
    let mut allowed = String::new();
    for name in identity {
        let lower = name.to_ascii_lowercase();
        // Runs before ext_authz: a client copy never survives, even when the sidecar
        // emits no identity (public routes).
        let _ = writeln!(removes, "                  - remove: {lower}");
        let _ = write!(allowed, "{{exact: {lower}}}, ");
    }
    let admin = free_addr();
    let conf = format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
static_resources:
  listeners:
  - name: gateway
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          # Append the TCP peer to X-Forwarded-For: the sidecar takes the right-most
          # untrusted entry, so a client-sent value cannot choose the IP.
          use_remote_address: true
          upgrade_configs: [{{upgrade_type: websocket}}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations:
{removes}                  - remove: x-forwarded-prefix
                  - remove: x-real-ip
                  - append: {{header: {{key: x-forwarded-uri,    value: "%REQ(:PATH)%"}},      append_action: OVERWRITE_IF_EXISTS_OR_ADD}}
                  - append: {{header: {{key: x-forwarded-method, value: "%REQ(:METHOD)%"}},    append_action: OVERWRITE_IF_EXISTS_OR_ADD}}
                  - append: {{header: {{key: x-forwarded-host,   value: "%REQ(:AUTHORITY)%"}}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}}
                  - append: {{header: {{key: x-forwarded-port,   value: "{port}"}},             append_action: OVERWRITE_IF_EXISTS_OR_ADD}}
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              allowed_headers:
                patterns: [{{exact: cookie}}, {{exact: user-agent}}, {{exact: accept}}, {{exact: sec-websocket-protocol}}, {{prefix: x-forwarded-}}]
              status_on_error: {{code: InternalServerError}}
              http_service:
                server_uri: {{uri: "http://{sidecar}", cluster: auth, timeout: 30s}}
                path_prefix: /verify
                authorization_response:
                  allowed_upstream_headers:
                    patterns: [{allowed}]
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: auth
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: auth
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {sip}, port_value: {sport}}}}}}}}}]}}]
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{{backend_address}}}}}}}]}}]
"#,
        admin_port = admin.port(),
        port = addr.port(),
        sip = sidecar.ip(),
        sport = sidecar.port(),
    );
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, conf).expect("write envoy.yaml");
    let mut cmd = Command::new(Kind::Envoy.program());
    cmd.arg("-c")
        .arg(&path)
        // Its own shared-memory namespace, so parallel Envoys never collide.
        .args(["--base-id", &addr.port().to_string()])
        .args(["--concurrency", "1", "-l", "warning"]);
    cmd
}
