//! A real JWKS server for the remote-key tests: actix-web on 127.0.0.1, port 0, in its own
//! thread. It can rotate keys, fail in every way a real IdP does (500, garbage, an empty
//! set, hanging, slow, down) and counts its hits. Also ES256 keys with their JWKs.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A freshly generated ES256 key.
#[derive(Clone)]
pub struct EcKey {
    pub kid: String,
    encoding: EncodingKey,
    x: String,
    y: String,
}

impl EcKey {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 keygen");
        let point = pair.public_key().as_ref();
        EcKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().expect("pkcs8").as_ref()),
            x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            y: URL_SAFE_NO_PAD.encode(&point[33..65]),
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
               "kid": self.kid, "x": self.x, "y": self.y})
    }

    /// Signs `claims` under this key's kid.
    pub fn mint(&self, claims: &Value) -> String {
        self.mint_as(&self.kid, claims)
    }

    /// Signs `claims` with this key but names another kid in the header.
    pub fn mint_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("claims encode")
    }
}

/// How the server answers `/jwks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Status(u16),
    Garbage,
    Empty,
    /// Never answers.
    Hang,
    /// Answers after a delay (to make concurrent requests overlap one fetch).
    Slow(Duration),
}

struct Shared {
    keys: Mutex<Vec<Value>>,
    mode: Mutex<Mode>,
    /// `issuer` in the discovery document; the server's own URL when unset.
    discovery_issuer: Mutex<Option<String>>,
    url: Mutex<String>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// The running server; stopped (connection refused) by [`JwksServer::go_down`] or on drop.
pub struct JwksServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    handle: Option<ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn jwks(shared: web::Data<Shared>) -> HttpResponse {
    shared.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *shared.mode.lock().expect("lock");
    let keys = shared.keys.lock().expect("lock").clone();
    let mut ok = HttpResponse::Ok();
    ok.content_type("application/json");
    match mode {
        Mode::Serve => ok.body(json!({ "keys": keys }).to_string()),
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            ok.body(json!({ "keys": keys }).to_string())
        }
        Mode::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("valid status"))
                .body("upstream trouble")
        }
        Mode::Garbage => ok.body("<html>this is not a key set"),
        Mode::Empty => ok.body(r#"{"keys":[]}"#),
        Mode::Hang => std::future::pending().await,
    }
}

async fn discovery(shared: web::Data<Shared>) -> HttpResponse {
    shared.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let url = shared.url.lock().expect("lock").clone();
    let issuer = shared
        .discovery_issuer
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_else(|| url.clone());
    HttpResponse::Ok().json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{url}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

impl JwksServer {
    /// Starts serving `keys` on a free loopback port.
    pub fn start(keys: &[&EcKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            keys: Mutex::new(keys.iter().map(|k| k.jwk()).collect()),
            mode: Mutex::new(Mode::Serve),
            discovery_issuer: Mutex::new(None),
            url: Mutex::new(url.clone()),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
        });
        let data = web::Data::from(shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/jwks", web::get().to(jwks))
                        .route(
                            "/.well-known/openid-configuration",
                            web::get().to(discovery),
                        )
                })
                .workers(2)
                .disable_signals()
                .shutdown_timeout(0)
                .listen(listener)
                .expect("listen")
                .run();
                tx.send(server.handle()).expect("report handle");
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("server started");
        JwksServer {
            url,
            shared,
            handle: Some(handle),
            thread: Some(thread),
        }
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// Publishes exactly these keys from now on.
    pub fn set_keys(&self, keys: &[&EcKey]) {
        *self.shared.keys.lock().expect("lock") = keys.iter().map(|k| k.jwk()).collect();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("lock") = mode;
    }

    /// Makes the discovery document name another issuer.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.shared.discovery_issuer.lock().expect("lock") = Some(issuer.into());
    }

    pub fn jwks_hits(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }

    /// Stops the server: from now on connections are refused.
    pub fn go_down(&mut self) {
        if let Some(handle) = self.handle.take() {
            // The stop command is sent at once; the returned future only awaits completion.
            drop(handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.go_down();
    }
}
