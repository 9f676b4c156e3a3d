//! Key generation and token minting for tests and benches (feature `test-util`).

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RsaKeyPair,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::keys::VerifyingKey;

/// A signing key and its verifying twin.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public key (or secret) in the raw form `VerifyingKey::from_public_der` takes.
    pub public: Vec<u8>,
}

impl TestKey {
    pub fn verifying(&self) -> VerifyingKey {
        match self.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                VerifyingKey::hmac(Some(self.kid.clone()), self.alg, &self.public)
            }
            alg => VerifyingKey::from_public_der(Some(self.kid.clone()), alg, &self.public),
        }
        .expect("generated test keys are valid")
    }

    /// Signs `claims` with this key's kid and alg.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("test claims encode")
    }

    /// Like [`TestKey::mint`], with the JOSE `typ` given (`None`: no `typ` at all).
    pub fn mint_with_typ(&self, claims: &Value, typ: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("test claims encode")
    }
}

/// A fixed HMAC test key (64 bytes: long enough for HS512).
pub fn hmac_key(alg: Algorithm, kid: &str) -> TestKey {
    let secret = b"test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMN".to_vec();
    TestKey {
        alg,
        kid: kid.into(),
        encoding: EncodingKey::from_secret(&secret),
        public: secret,
    }
}

struct Generated {
    rsa_pkcs8: Vec<u8>,
    rsa_public: Vec<u8>,
    p256_pkcs8: Vec<u8>,
    p256_public: Vec<u8>,
    p384_pkcs8: Vec<u8>,
    p384_public: Vec<u8>,
    ed_pkcs8: Vec<u8>,
    ed_public: Vec<u8>,
}

fn generated() -> &'static Generated {
    static KEYS: OnceLock<Generated> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA keygen");
        let p256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 keygen");
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("P-384 keygen");
        let ed = Ed25519KeyPair::generate().expect("Ed25519 keygen");
        Generated {
            rsa_pkcs8: rsa.as_der().expect("pkcs8").as_ref().to_vec(),
            rsa_public: rsa.public_key().as_ref().to_vec(),
            p256_pkcs8: p256.to_pkcs8v1().expect("pkcs8").as_ref().to_vec(),
            p256_public: p256.public_key().as_ref().to_vec(),
            p384_pkcs8: p384.to_pkcs8v1().expect("pkcs8").as_ref().to_vec(),
            p384_public: p384.public_key().as_ref().to_vec(),
            ed_pkcs8: ed.to_pkcs8v1().expect("pkcs8").as_ref().to_vec(),
            ed_public: ed.public_key().as_ref().to_vec(),
        }
    })
}

/// An asymmetric test key, generated once per process.
pub fn asymmetric_key(alg: Algorithm, kid: &str) -> TestKey {
    let g = generated();
    let (encoding, public) = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => (
            // jsonwebtoken's `from_rsa_der` wants PKCS#1; its PEM reader unwraps PKCS#8.
            EncodingKey::from_rsa_pem(pkcs8_pem(&g.rsa_pkcs8).as_bytes()).expect("RSA PEM"),
            g.rsa_public.clone(),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_der(&g.p256_pkcs8),
            g.p256_public.clone(),
        ),
        Algorithm::ES384 => (
            EncodingKey::from_ec_der(&g.p384_pkcs8),
            g.p384_public.clone(),
        ),
        Algorithm::EdDSA => (EncodingKey::from_ed_der(&g.ed_pkcs8), g.ed_public.clone()),
        other => panic!("{other:?} is not asymmetric"),
    };
    TestKey {
        alg,
        kid: kid.into(),
        encoding,
        public,
    }
}

fn pkcs8_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Any supported algorithm's test key.
pub fn key(alg: Algorithm, kid: &str) -> TestKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => hmac_key(alg, kid),
        other => asymmetric_key(other, kid),
    }
}
