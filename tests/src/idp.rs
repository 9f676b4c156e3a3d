//! A real identity provider: `oidc-provider` (npm, pinned in `tests/node/package.json`,
//! installed by `.ci/run`) run by `tests/node/idp.mjs` on a loopback port, with keys from a
//! JWKS file `tests/node/idp-keys.mjs` writes (RS256, ES256, EdDSA). Missing node or the
//! package fails the test, never skips it.
//!
//! Clients `agent-rs256`, `agent-es256` and `agent-eddsa` (secret `<id>-secret`) get JWT
//! access tokens signed with that algorithm for the `resource` they ask for (RFC 8707), by
//! the client-credentials grant; [`Idp::id_token`] runs the authorization-code flow through
//! the provider's development login pages (`tests/node/idp-id-token.mjs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;

use crate::http::{Request, Target, send};
use crate::process::{Proc, free_addr, repo_root};

/// The signing algorithms the IdP's clients use, by client id.
pub const CLIENTS: [(&str, &str); 3] = [
    ("agent-rs256", "RS256"),
    ("agent-es256", "ES256"),
    ("agent-eddsa", "EdDSA"),
];

fn node_dir() -> PathBuf {
    repo_root().join("tests/node")
}

/// `node`, failing with what to do when it or the package is missing.
fn node() -> Command {
    let package = node_dir().join("node_modules/oidc-provider/package.json");
    assert!(
        package.is_file(),
        "{} is missing: run `cd tests/node && npm ci` (.ci/run does)",
        package.display()
    );
    assert!(
        crate::process::which("node").is_some(),
        "node is not installed; .ci/run installs it"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(node_dir());
    cmd
}

/// Writes a fresh private JWKS (RS256, ES256, EdDSA; kids `<prefix>-rs256`, ...) to
/// `dir/<prefix>.jwks.json`.
pub fn generate_keys(dir: &Path, prefix: &str) -> PathBuf {
    let out = dir.join(format!("{prefix}.jwks.json"));
    let status = node()
        .arg("idp-keys.mjs")
        .arg(&out)
        .arg(prefix)
        .status()
        .expect("run node idp-keys.mjs");
    assert!(status.success(), "idp-keys.mjs failed: {status}");
    out
}

/// The running provider.
pub struct Idp {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`: the `iss` of its tokens and its discovery base.
    pub issuer: String,
    proc: Proc,
}

impl Idp {
    /// Starts the provider on a free port with the keys in `jwks`.
    pub async fn start(dir: &Path, jwks: &Path) -> Idp {
        Idp::start_on(dir, free_addr(), jwks).await
    }

    /// Starts the provider on `addr` (a restart keeps the issuer) with the keys in `jwks`.
    pub async fn start_on(dir: &Path, addr: SocketAddr, jwks: &Path) -> Idp {
        let mut cmd = node();
        cmd.arg("idp.mjs")
            .args(["--port", &addr.port().to_string()])
            .arg("--jwks")
            .arg(jwks);
        let log = dir.join(format!("idp-{}.log", addr.port()));
        let mut proc = tokio::task::spawn_blocking(move || {
            let mut proc = Proc::spawn("oidc-provider", cmd, log);
            test_support::wait_for_log_line(&mut proc, "idp ready", Duration::from_secs(30));
            proc
        })
        .await
        .expect("start task");
        proc.check_alive().unwrap_or_else(|e| panic!("{e}"));
        Idp {
            addr,
            issuer: format!("http://{addr}"),
            proc,
        }
    }

    /// A client-credentials access token for `resource` with `scope` (space-separated).
    pub async fn access_token(
        &self,
        client: &str,
        resource: &str,
        scope: &str,
    ) -> Result<String, String> {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ]);
        let basic = STANDARD.encode(format!("{client}:{client}-secret"));
        let req = Request {
            method: Method::POST,
            target: "/token".into(),
            headers: vec![
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("authorization".into(), format!("Basic {basic}")),
            ],
            body: body.into_bytes(),
        };
        let r = send(&Target::Tcp(self.addr), &req).await?;
        let json = r.json();
        match json["access_token"].as_str() {
            Some(t) if r.status == 200 => Ok(t.to_owned()),
            _ => Err(format!("token endpoint: {} {}", r.status, r.text())),
        }
    }

    /// An ID token for `client` (its `aud` is the client, it carries a `nonce`), from the
    /// authorization-code flow.
    pub async fn id_token(&self, client: &str) -> String {
        let mut cmd = node();
        cmd.arg("idp-id-token.mjs").arg(&self.issuer).arg(client);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("task")
            .expect("run node idp-id-token.mjs");
        assert!(
            out.status.success(),
            "idp-id-token.mjs: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).expect("a JWT is ASCII")
    }

    /// Stops the provider (an outage; a restart with [`Idp::start_on`] and the same
    /// address keeps the issuer).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// `application/x-www-form-urlencoded`.
fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The JOSE header and claims of a JWT, unverified (for assertions on what the IdP issued).
pub fn peek(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let mut part = || -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(parts.next().expect("a JWT part"))
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (part(), part())
}
