//! Development tokens signed with the first HMAC key of the first issuer.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde_json::{Value, json};

use crate::config::Runtime;

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
    let id = rt
        .mint_key
        .as_ref()
        .ok_or("the first issuer has no HMAC key to mint with")?;
    let issuer = &rt.issuers[0];
    // Found now, in the compiled key set: compiling keeps no separate copy of the secret.
    let key = issuer
        .keys
        .find(id.kid.as_deref(), id.alg)
        .ok_or("the first issuer's HMAC key is ambiguous: give it a kid")?;
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
    let mut header = Header::new(id.alg);
    header.kid = id.kid.clone();
    let header = serde_json::to_vec(&header).map_err(|e| format!("cannot encode: {e}"))?;
    let claims = serde_json::to_vec(&claims).map_err(|e| format!("cannot encode: {e}"))?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = key
        .sign_hmac(input.as_bytes())
        .ok_or("the first issuer's mint key is not an HMAC key")?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
