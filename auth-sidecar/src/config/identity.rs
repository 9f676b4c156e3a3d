//! `identity`: which claim goes into which header, and the signature key.

use std::collections::HashSet;

use identity_wire::SigningKey;

use super::compiler::Compiler;
use super::raw::RawIdentity;
use crate::identity::{IdentityMapping, SIGNATURE_HEADER, Slot};

/// Compiles `identity`: one header and claim per slot, and the optional signature.
pub(super) fn compile_identity(raw: &RawIdentity, c: &mut Compiler) -> Option<IdentityMapping> {
    let raw_slots = [
        &raw.user_id,
        &raw.username,
        &raw.role,
        &raw.roles,
        &raw.email,
        &raw.expires,
    ];
    let mut slots = Vec::new();
    let mut seen = HashSet::new();
    for (slot, raw_slot) in Slot::ALL.iter().zip(raw_slots) {
        let path = format!("identity.{}", slot.key());
        let header = raw_slot.header.as_deref().unwrap_or(slot.default_header());
        let claim = raw_slot.claim.as_deref().unwrap_or(slot.default_claim());
        if *slot == Slot::Expires && claim != "exp" {
            c.push(
                format!("{path}.claim"),
                "the expires header always carries `exp`",
            );
        }
        if let Some(name) = c.header_name(header, &format!("{path}.header")) {
            if !seen.insert(name.clone()) {
                c.push(
                    format!("{path}.header"),
                    format!("header {header:?} is used twice"),
                );
            }
            slots.push((name, claim.to_owned()));
        }
    }
    let signature = raw.signature.as_ref().and_then(|sig| {
        let path = "identity.signature";
        let name = c.header_name(
            sig.header.as_deref().unwrap_or(SIGNATURE_HEADER),
            &format!("{path}.header"),
        )?;
        if seen.contains(&name) {
            c.push(format!("{path}.header"), "collides with an identity header");
        }
        let secret = c.secret(
            sig.secret.as_ref(),
            sig.secret_env.as_ref(),
            sig.secret_file.as_ref(),
            path,
        )?;
        if secret.len() < 32 {
            c.push(
                path,
                format!(
                    "the signature secret is {} bytes; use at least 32",
                    secret.len()
                ),
            );
            return None;
        }
        Some((name, SigningKey::new(&secret)))
    });
    (slots.len() == Slot::ALL.len()).then_some(IdentityMapping { slots, signature })
}
