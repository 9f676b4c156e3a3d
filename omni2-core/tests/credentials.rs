//! Per-server credentials against the real `omni2` binary and the Python fixture server
//! (`fixtures/faults_mcp_server.py`): configured headers and bearer token arrive, the
//! caller's own token never does; a custom CA and a client certificate over TLS.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const FIXTURE: &str = "faults_mcp_server.py";
const CLIENT_TOKEN: &str = "client-own-token-must-stay-here";

fn server_yaml(name: &str, url: &str, credentials: &str) -> String {
    format!(
        r#"  - name: {name}
    url: {url}
    probe_interval: 200ms
    probe_timeout: 2s
    call_timeout: 5s
    unhealthy_after: 1
    healthy_after: 1
    credentials:
{credentials}
"#
    )
}

async fn call(http: &reqwest::Client, o: &Omni2, server: &str, tool: &str, args: Value) -> Value {
    let mut who = user();
    who.push(("authorization".into(), format!("Bearer {CLIENT_TOKEN}")));
    let r = with(
        http.post(o.url(&format!("/api/v1/mcp/servers/{server}/tools/{tool}/call"))),
        &who,
    )
    .json(&args)
    .send()
    .await
    .expect("request");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

async fn wait_state(http: &reqwest::Client, o: &Omni2, server: &str, state: &str) -> Value {
    eventually(&format!("{server} {state}"), WAIT, || async {
        let s = server_status(http, o, server).await;
        (s["state"] == state).then_some(s)
    })
    .await
}

#[tokio::test]
async fn configured_credentials_arrive_and_the_callers_token_never_does() {
    let mcp = McpServer::start_script(FIXTURE, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "file-secret-4711\n").expect("write");
    // The bearer token comes from the environment (`${VAR}`), the API key from a file.
    let credentials = format!(
        "      bearer_token: \"${{OMNI2_TEST_SECRET}}\"\n      headers: {{X-Static: static-1}}\n      header_files: {{X-Api-Key: {}}}",
        key_file.display()
    );
    let yaml = format!("servers:\n{}", server_yaml("f", &mcp.url(), &credentials));
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    wait_state(&http, &o, "f", "healthy").await;

    let body = call(&http, &o, "f", "seen_headers", json!({})).await;
    let seen: Vec<String> =
        serde_json::from_str(body["content"][0]["text"].as_str().expect("text")).expect("list");
    for wanted in [
        format!("authorization: Bearer {SECRET}"),
        "x-static: static-1".to_owned(),
        "x-api-key: file-secret-4711".to_owned(),
    ] {
        assert!(seen.contains(&wanted), "{wanted:?} not in {seen:?}");
    }
    assert!(
        seen.iter().all(|h| !h.contains(CLIENT_TOKEN)),
        "the caller's token reached the server: {seen:?}"
    );
    // Identity headers are omni2's input, never passed on either.
    assert!(seen.iter().all(|h| !h.contains("alice")), "{seen:?}");
}

struct Pki {
    ca: String,
    files: Vec<(&'static str, String)>,
}

/// Parameters with their own subject (rcgen's default one would make every certificate
/// look self-signed).
fn params(names: &[&str], subject: &str) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, subject);
    p
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn pki(dir: &Path) -> Pki {
    let mut ca_params = params(&[], "omni2 test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server = params(&["127.0.0.1"], "127.0.0.1")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let client = params(&["omni2-client"], "omni2-client")
        .signed_by(&client_key, &ca)
        .expect("client cert");
    let mut files = Vec::new();
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        files.push((name, path.display().to_string()));
    }
    Pki {
        ca: dir.join("ca.pem").display().to_string(),
        files,
    }
}

impl Pki {
    fn path(&self, name: &str) -> &str {
        &self.files.iter().find(|(n, _)| *n == name).expect("file").1
    }
}

#[tokio::test]
async fn custom_ca_and_client_certificate_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let mcp = McpServer::start_script(
        FIXTURE,
        &[
            "--certfile",
            pki.path("server.pem"),
            "--keyfile",
            pki.path("server.key"),
            "--client-ca",
            &pki.ca,
        ],
    );
    let url = format!("https://127.0.0.1:{}/mcp", mcp.port);
    let with_cert = format!(
        "      tls:\n        ca_file: {}\n        client_cert_file: {}\n        client_key_file: {}",
        pki.ca,
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let ca_only = format!("      tls:\n        ca_file: {}", pki.ca);
    let yaml = format!(
        "servers:\n{}{}",
        server_yaml("tls", &url, &with_cert),
        server_yaml("nocert", &url, &ca_only)
    );
    let o = Omni2::start(&yaml, None);
    let http = http_client();
    wait_state(&http, &o, "tls", "healthy").await;
    let body = call(&http, &o, "tls", "echo", json!({"text": "over tls"})).await;
    assert_eq!(body["content"][0]["text"], "over tls", "{body}");

    // The same server without a client certificate: the handshake is refused, so probes
    // fail and the server stays unhealthy (its first probe decides at once).
    let s = eventually("nocert probed", WAIT, || async {
        let s = server_status(&http, &o, "nocert").await;
        (s["last_error"] != "not probed yet" && !s["last_error"].is_null()).then_some(s)
    })
    .await;
    assert_eq!(s["state"], "unhealthy", "{s}");
    let tls = server_status(&http, &o, "tls").await;
    assert_eq!(tls["state"], "healthy", "{tls}");
}
