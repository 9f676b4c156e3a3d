//! `servers[].credentials`: what omni2 sends a backend MCP server to prove who it is (never
//! the caller's own token). Checked at load: every file is read and every PEM parsed then,
//! and problems name the field, never a secret.

use std::collections::BTreeMap;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::Error;

/// `credentials:` as written.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawCredentials {
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    header_files: BTreeMap<String, String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTls {
    ca_file: Option<String>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
}

/// A server's checked credentials. `Debug` shows header names only; equality lets a reload
/// that changes them (SIGHUP after a token file rotated) replace the server.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    /// Sent on every request to the server (values marked sensitive).
    pub headers: HeaderMap,
    /// PEM of extra trusted roots (beside the built-in ones).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate chain followed by its private key.
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.identity_pem.is_some())
            .finish()
    }
}

impl Credentials {
    /// Nothing to send: the server shares the default HTTP client.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.ca_pem.is_none() && self.identity_pem.is_none()
    }
}

/// Reads a secret file; trailing newlines are not part of a secret.
fn read_secret(path: &str, field: &str, errors: &mut Error) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
        Err(e) => {
            errors.push(field, format!("cannot read {path:?}: {}", e.kind()));
            None
        }
    }
}

fn read_pem(path: &str, field: &str, errors: &mut Error) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            errors.push(field, format!("cannot read {path:?}: {}", e.kind()));
            None
        }
    }
}

fn sensitive(value: &str, field: &str, errors: &mut Error) -> Option<HeaderValue> {
    match HeaderValue::from_str(value) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            // The value is a secret: say what is wrong, not what it is.
            errors.push(
                field,
                "invalid header value: visible ASCII and spaces only, no line breaks",
            );
            None
        }
    }
}

pub(super) fn check_credentials(raw: RawCredentials, p: &str, errors: &mut Error) -> Credentials {
    let mut c = Credentials::default();
    let mut add = |name: &str, value: Option<String>, field: String, errors: &mut Error| {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            errors.push(field, format!("invalid header name {name:?}"));
            return;
        };
        if c.headers.contains_key(&header) {
            errors.push(field, format!("header {name:?} is configured twice"));
            return;
        }
        if let Some(v) = value.and_then(|v| sensitive(&v, &field, errors)) {
            c.headers.insert(header, v);
        }
    };
    let bearer = match (raw.bearer_token, raw.bearer_token_file) {
        (Some(_), Some(_)) => {
            errors.push(
                format!("{p}.bearer_token"),
                "give bearer_token or bearer_token_file, not both",
            );
            None
        }
        (Some(t), None) => Some((t, format!("{p}.bearer_token"))),
        (None, Some(f)) => {
            let field = format!("{p}.bearer_token_file");
            read_secret(&f, &field, errors).map(|t| (t, field))
        }
        (None, None) => None,
    };
    // An empty token (e.g. `${TOKEN:-}`) means none, as for `identity_secret`.
    if let Some((token, field)) = bearer.filter(|(t, _)| !t.is_empty()) {
        add(
            AUTHORIZATION.as_str(),
            Some(format!("Bearer {token}")),
            field,
            errors,
        );
    }
    for (name, value) in raw.headers {
        add(&name, Some(value), format!("{p}.headers.{name}"), errors);
    }
    for (name, path) in raw.header_files {
        let field = format!("{p}.header_files.{name}");
        let value = read_secret(&path, &field, errors);
        add(&name, value, field, errors);
    }
    if let Some(tls) = raw.tls {
        let t = format!("{p}.tls");
        if let Some(path) = tls.ca_file {
            let field = format!("{t}.ca_file");
            if let Some(pem) = read_pem(&path, &field, errors) {
                match reqwest::Certificate::from_pem_bundle(&pem) {
                    Ok(certs) if !certs.is_empty() => c.ca_pem = Some(pem),
                    Ok(_) => errors.push(field, format!("no certificate in {path:?}")),
                    Err(e) => errors.push(field, format!("invalid PEM in {path:?}: {e}")),
                }
            }
        }
        match (tls.client_cert_file, tls.client_key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = read_pem(&cert, &format!("{t}.client_cert_file"), errors);
                let key_pem = read_pem(&key, &format!("{t}.client_key_file"), errors);
                if let (Some(mut pem), Some(key_pem)) = (cert_pem, key_pem) {
                    pem.push(b'\n');
                    pem.extend_from_slice(&key_pem);
                    match reqwest::Identity::from_pem(&pem) {
                        Ok(_) => c.identity_pem = Some(pem),
                        // reqwest's message names no key material.
                        Err(e) => errors.push(
                            format!("{t}.client_cert_file"),
                            format!("invalid client certificate or key: {e}"),
                        ),
                    }
                }
            }
            (None, None) => {}
            (Some(_), None) => errors.push(
                format!("{t}.client_key_file"),
                "required with client_cert_file",
            ),
            (None, Some(_)) => errors.push(
                format!("{t}.client_cert_file"),
                "required with client_key_file",
            ),
        }
    }
    c
}
