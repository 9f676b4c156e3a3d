//! Development tokens signed with the first HMAC key of the first issuer.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::config::{ProcessEnv, Runtime, first_hmac_key};

/// What to put in a minted token.
#[derive(Clone, Debug, Default)]
pub struct MintRequest {
    pub sub: String,
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub ttl: Duration,
}

/// Signs a token valid from `now` for `ttl`, for the first issuer and its first audience.
pub fn mint(rt: &Runtime, req: &MintRequest, now: i64) -> Result<String, String> {
    // Read from the configuration's source now: compiling keeps no signing secret.
    let key = first_hmac_key(&rt.source, &ProcessEnv)
        .map_err(|p| p.to_string())?
        .ok_or("the first issuer has no HMAC key to mint with")?;
    let issuer = &rt.issuers[0];
    let mut claims = json!({
        "iss": issuer.issuer,
        "sub": req.sub,
        "iat": now,
        "exp": now + req.ttl.as_secs() as i64,
    });
    let obj = claims.as_object_mut().expect("literal object");
    if let Some(aud) = issuer.audiences.first() {
        obj.insert("aud".into(), json!(aud));
    }
    if let Some(role) = &req.role {
        obj.insert("role".into(), json!(role));
    }
    if !req.roles.is_empty() {
        obj.insert("roles".into(), json!(req.roles));
    }
    obj.insert(
        "preferred_username".into(),
        Value::String(req.username.clone().unwrap_or_else(|| req.sub.clone())),
    );
    if let Some(email) = &req.email {
        obj.insert("email".into(), json!(email));
    }
    let mut header = Header::new(key.alg);
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret))
        .map_err(|e| format!("cannot sign: {e}"))
}
