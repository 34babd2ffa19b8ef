//! Fixtures shared by the fuzz targets and the seed generator: one fixed Ed25519 key, its JWKS,
//! and a signer for seed tickets. Nothing here is secret: the key exists only for fuzzing.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use grantfs::ticket::{Jwk, JwkSet, TicketClaims, TicketVerifier};
use jsonwebtoken::EncodingKey;

/// The key id the fixed JWKS publishes.
pub const KID: &str = "fuzz-k1";
/// The issuer the fixed verifier pins.
pub const ISSUER: &str = "http://127.0.0.1:7070";

const SEED: [u8; 32] = *b"grantfs-fuzz-fixed-ed25519-seed!";

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

/// The JWKS holding the fixed key's public half.
pub fn jwks() -> JwkSet {
    JwkSet {
        keys: vec![Jwk::ed25519(KID, signing_key().verifying_key().as_bytes())],
    }
}

/// A verifier over [`jwks`] pinning [`ISSUER`].
pub fn verifier() -> TicketVerifier {
    match TicketVerifier::from_jwks(&jwks(), Some(ISSUER.to_owned())) {
        Ok(v) => v,
        Err(e) => panic!("fixed jwks is invalid: {e}"),
    }
}

/// Signs `claims` with the fixed key under `kid`.
pub fn sign(claims: &TicketClaims, kid: &str) -> String {
    let der = match signing_key().to_pkcs8_der() {
        Ok(d) => d,
        Err(e) => panic!("pkcs8 encoding of the fixed key: {e}"),
    };
    match grantfs::ticket::sign(claims, kid, &EncodingKey::from_ed_der(der.as_bytes())) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}
