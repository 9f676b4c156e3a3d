//! Shared by the in-process HTTP suites: a config on disk, the real actix app, and requests
//! shaped the way Traefik sends them; and one raw HTTP/1.1 GET for the suites that run the
//! real binary.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Response, Service, ServiceFactory};
use actix_web::test::TestRequest;
pub use auth_sidecar::clock::unix_now;
use auth_sidecar::config::Runtime;
use auth_sidecar::http::{AppState, main_service};
use auth_sidecar::test_util::{TestKey, hmac_key};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

pub const ISS: &str = "https://idp.test";

/// The HMAC test key every suite signs with (kid `hs`, secret in env `HS_SECRET`).
pub fn hs() -> TestKey {
    hmac_key(Algorithm::HS256, "hs")
}

/// Resolves `secret_env` references for test configs.
pub fn env(name: &str) -> Option<String> {
    (name == "HS_SECRET").then(|| String::from_utf8(hs().public).expect("ASCII secret"))
}

/// Claims that the test issuer's rules accept, valid for ten minutes from now.
pub fn claims(sub: &str, role: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": ISS, "aud": "omni2", "sub": sub, "preferred_username": sub,
        "role": role, "roles": [role], "email": format!("{sub}@example.test"),
        "iat": now - 10, "exp": now + 600,
    })
}

/// Compiles `yaml` with `dir` as the base for relative key files.
pub fn runtime(yaml: &str, dir: &Path) -> Runtime {
    Runtime::from_yaml(yaml, dir, &env).unwrap_or_else(|p| panic!("test config is invalid:\n{p}"))
}

/// The real main-listener service (forwardAuth, then the App with the admin routes) over
/// `rt`, as `serve` runs it without an admin listener.
pub async fn app(
    rt: Runtime,
) -> (
    impl Service<actix_http::Request, Response = Response<BoxBody>, Error = actix_web::Error>,
    Arc<AppState>,
) {
    let state = Arc::new(AppState::new(rt));
    let svc = main_service(&state, true)
        .new_service(AppConfig::default())
        .await
        .expect("the app starts");
    (svc, state)
}

/// An auth request as Traefik sends it: `GET /verify`, the original request in
/// `X-Forwarded-*`, the client's own headers copied.
pub fn forwarded(method: &str, uri: &str) -> TestRequest {
    TestRequest::get()
        .uri("/verify")
        .insert_header(("X-Forwarded-Method", method))
        .insert_header(("X-Forwarded-Uri", uri))
        .insert_header(("X-Forwarded-Host", "api.example.test"))
        .insert_header(("X-Forwarded-Proto", "https"))
        .insert_header(("X-Forwarded-For", "203.0.113.7"))
}

/// What a test looks at in an answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// Every value of header `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of `name`; panics when absent or repeated.
    #[track_caller]
    pub fn one(&self, name: &str) -> &str {
        match self.all(name).as_slice() {
            [v] => v,
            other => panic!("expected exactly one {name}, got {other:?} in {self:?}"),
        }
    }

    /// The `error` code of a deny body.
    #[track_caller]
    pub fn error(&self) -> String {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("deny body is not JSON ({e}): {:?}", self.body));
        v["error"].as_str().expect("error is a string").to_owned()
    }
}

pub async fn call<S>(svc: &S, req: TestRequest) -> Answer
where
    S: Service<actix_http::Request, Response = Response<BoxBody>, Error = actix_web::Error>,
{
    let res = svc
        .call(req.to_request())
        .await
        .expect("the service answers");
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    let bytes = res
        .into_body()
        .try_into_bytes()
        .unwrap_or_else(|_| panic!("body is not in memory"));
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// One HTTP/1.1 `GET` to a sidecar process on loopback, over a fresh connection:
/// (status, the raw answer).
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(test_support::patience(Duration::from_secs(10))))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.shutdown(Shutdown::Write)?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {raw:?}")))?;
    Ok((status, raw))
}
