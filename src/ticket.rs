//! Mount tickets: the claims, Ed25519 (EdDSA) signing, verification against a JWKS with pinned
//! algorithm, audience, issuer and 30 s of leeway, and an unverified peek for early refusals.
//! Keys are created and stored by the control plane; this module only uses them.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{Mode, TICKET_AUDIENCE, TICKET_LEEWAY_SECS, Timestamp};

/// Tickets longer than this are refused before any parsing.
pub const MAX_TICKET_BYTES: usize = 8 * 1024;

/// The claims a mount ticket carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// The control plane's public base URL.
    pub iss: String,
    /// Always `grantfs-agent`.
    pub aud: String,
    /// The runtime id.
    pub sub: String,
    /// The session id.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The workspace, `handle/name`.
    pub ws: String,
    pub tenant: String,
    pub grant: String,
    pub mode: Mode,
}

impl TicketClaims {
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_secs(self.exp)
    }
}

/// Why a ticket was refused. `Expired` maps to `ticket_expired`, everything else to `ticket_invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket is malformed: {0}")]
    Malformed(String),
    #[error("ticket is longer than {MAX_TICKET_BYTES} bytes")]
    TooLong,
    #[error("ticket has expired")]
    Expired,
    #[error("ticket is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("ticket signature does not verify")]
    BadSignature,
    #[error("ticket uses algorithm {0}; only EdDSA is accepted")]
    WrongAlgorithm(String),
    #[error("ticket header has typ {0:?}; JWT expected")]
    WrongType(Option<String>),
    #[error("ticket names no key id (kid)")]
    MissingKid,
    #[error("ticket key id {0:?} is not a current signing key")]
    UnknownKid(String),
    #[error("ticket audience is not {TICKET_AUDIENCE}")]
    WrongAudience,
    #[error("ticket issuer {0:?} is not this control plane")]
    WrongIssuer(String),
    #[error("ticket lacks the required claim {0}")]
    MissingClaim(String),
}

impl TicketError {
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            TicketError::Expired => crate::ErrorCode::TicketExpired,
            _ => crate::ErrorCode::TicketInvalid,
        }
    }
}

/// A public key as published in the JWKS (OKP / Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The raw 32-byte public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    pub fn ed25519(kid: &str, public_key: &[u8; 32]) -> Self {
        use base64::Engine;
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public_key),
            kid: kid.into(),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// Signs claims with a PKCS#8 Ed25519 key.
pub fn sign(claims: &TicketClaims, kid: &str, key: &EncodingKey) -> Result<String, String> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, key).map_err(|e| format!("signing failed: {e}"))
}

fn check_shape(token: &str) -> Result<Header, TicketError> {
    if token.len() > MAX_TICKET_BYTES {
        return Err(TicketError::TooLong);
    }
    if token.split('.').count() != 3 {
        return Err(TicketError::Malformed(
            "not three dot-separated parts".into(),
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| TicketError::Malformed(format!("header: {e}")))?;
    if header.alg != Algorithm::EdDSA {
        return Err(TicketError::WrongAlgorithm(format!("{:?}", header.alg)));
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err(TicketError::WrongType(header.typ.clone()));
    }
    Ok(header)
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TicketError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TicketError::Expired,
        ErrorKind::ImmatureSignature => TicketError::NotYetValid,
        ErrorKind::InvalidSignature => TicketError::BadSignature,
        ErrorKind::InvalidAudience => TicketError::WrongAudience,
        ErrorKind::InvalidIssuer => TicketError::WrongIssuer(String::new()),
        ErrorKind::MissingRequiredClaim(c) => TicketError::MissingClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => TicketError::WrongAlgorithm("other".into()),
        other => TicketError::Malformed(format!("{other:?}")),
    }
}

fn now_secs() -> i64 {
    Timestamp::now().unix_secs()
}

/// Decodes a ticket WITHOUT checking its signature, but with every structural and time check:
/// for refusing a bad ticket before any network call. Never authorize on this alone.
pub fn peek(token: &str) -> Result<TicketClaims, TicketError> {
    check_shape(token)?;
    let data = jsonwebtoken::dangerous::insecure_decode::<TicketClaims>(token)
        .map_err(|e| TicketError::Malformed(format!("claims: {e}")))?;
    let c = data.claims;
    check_times_and_audience(&c)?;
    Ok(c)
}

fn check_times_and_audience(c: &TicketClaims) -> Result<(), TicketError> {
    let now = now_secs();
    let leeway = TICKET_LEEWAY_SECS as i64;
    // Saturating: exp and nbf are whatever the ticket says, i64::MAX included (found by fuzz/).
    if c.exp.saturating_add(leeway) < now {
        return Err(TicketError::Expired);
    }
    if let Some(nbf) = c.nbf
        && nbf.saturating_sub(leeway) > now
    {
        return Err(TicketError::NotYetValid);
    }
    if c.aud != TICKET_AUDIENCE {
        return Err(TicketError::WrongAudience);
    }
    for (name, v) in [("sub", &c.sub), ("jti", &c.jti), ("iss", &c.iss)] {
        if v.is_empty() {
            return Err(TicketError::MissingClaim(name.into()));
        }
    }
    Ok(())
}

/// Verifies tickets against a set of public keys, pinning EdDSA, the audience and (when given)
/// the issuer, with [`TICKET_LEEWAY_SECS`] of leeway.
#[derive(Clone)]
pub struct TicketVerifier {
    keys: HashMap<String, DecodingKey>,
    issuer: Option<String>,
}

impl std::fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl TicketVerifier {
    pub fn from_jwks(jwks: &JwkSet, issuer: Option<String>) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for k in &jwks.keys {
            if k.kty != "OKP" || k.crv != "Ed25519" {
                continue;
            }
            let dk = DecodingKey::from_ed_components(&k.x)
                .map_err(|e| format!("jwks key {}: {e}", k.kid))?;
            keys.insert(k.kid.clone(), dk);
        }
        Ok(Self { keys, issuer })
    }

    pub fn verify(&self, token: &str) -> Result<TicketClaims, TicketError> {
        let header = check_shape(token)?;
        let kid = header.kid.ok_or(TicketError::MissingKid)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TicketError::UnknownKid(kid.clone()))?;
        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = TICKET_LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[TICKET_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "jti"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss.as_str()]);
        }
        let data =
            jsonwebtoken::decode::<TicketClaims>(token, key, &v).map_err(
                |e| match map_jwt_error(e) {
                    TicketError::WrongIssuer(_) => {
                        TicketError::WrongIssuer(peek_issuer(token).unwrap_or_default())
                    }
                    other => other,
                },
            )?;
        check_times_and_audience(&data.claims)?;
        Ok(data.claims)
    }
}

fn peek_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode::<TicketClaims>(token)
        .ok()
        .map(|d| d.claims.iss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    fn key() -> (EncodingKey, JwkSet) {
        let sk = SigningKey::generate(&mut rand::rngs::OsRng);
        let der = sk.to_pkcs8_der().unwrap();
        let jwks = JwkSet {
            keys: vec![Jwk::ed25519("k1", sk.verifying_key().as_bytes())],
        };
        (EncodingKey::from_ed_der(der.as_bytes()), jwks)
    }

    fn claims(exp_in: i64) -> TicketClaims {
        let now = Timestamp::now().unix_secs();
        TicketClaims {
            iss: "http://127.0.0.1:7070".into(),
            aud: TICKET_AUDIENCE.into(),
            sub: "task-1".into(),
            jti: "ses_x".into(),
            iat: now,
            exp: now + exp_in,
            nbf: None,
            ws: "admin/ws".into(),
            tenant: "acme".into(),
            grant: "gr_x".into(),
            mode: Mode::Rw,
        }
    }

    #[test]
    fn signed_ticket_verifies_and_round_trips() {
        let (ek, jwks) = key();
        let c = claims(60);
        let t = sign(&c, "k1", &ek).unwrap();
        let v = TicketVerifier::from_jwks(&jwks, Some(c.iss.clone())).unwrap();
        assert_eq!(v.verify(&t).unwrap(), c);
        assert_eq!(peek(&t).unwrap(), c);
    }

    #[test]
    fn expired_ticket_is_rejected_past_leeway_only() {
        let (ek, jwks) = key();
        let v = TicketVerifier::from_jwks(&jwks, None).unwrap();
        let t = sign(&claims(-10), "k1", &ek).unwrap();
        assert!(v.verify(&t).is_ok(), "10 s past exp is within the leeway");
        let t = sign(&claims(-40), "k1", &ek).unwrap();
        assert_eq!(v.verify(&t), Err(TicketError::Expired));
        assert_eq!(peek(&t), Err(TicketError::Expired));
    }

    #[test]
    fn other_key_or_kid_or_issuer_is_rejected() {
        let (ek, jwks) = key();
        let (ek2, _) = key();
        let v = TicketVerifier::from_jwks(&jwks, Some("http://127.0.0.1:7070".into())).unwrap();
        let t = sign(&claims(60), "k1", &ek2).unwrap();
        assert_eq!(v.verify(&t), Err(TicketError::BadSignature));
        let t = sign(&claims(60), "k9", &ek).unwrap();
        assert_eq!(v.verify(&t), Err(TicketError::UnknownKid("k9".into())));
        let mut c = claims(60);
        c.iss = "http://evil".into();
        let t = sign(&c, "k1", &ek).unwrap();
        assert!(matches!(v.verify(&t), Err(TicketError::WrongIssuer(_))));
        let mut c = claims(60);
        c.aud = "other".into();
        let t = sign(&c, "k1", &ek).unwrap();
        assert_eq!(v.verify(&t), Err(TicketError::WrongAudience));
    }

    #[test]
    fn extreme_exp_and_nbf_do_not_overflow() {
        // exp + leeway and nbf - leeway overflowed (a panic with overflow checks, a wrong
        // answer without) on claims only peek sees unsigned, or a key holder signs.
        let (ek, jwks) = key();
        let v = TicketVerifier::from_jwks(&jwks, None).unwrap();
        let mut c = claims(60);
        c.exp = i64::MAX;
        c.nbf = Some(i64::MIN);
        let t = sign(&c, "k1", &ek).unwrap();
        assert_eq!(peek(&t), Ok(c.clone()));
        let _ = v.verify(&t);
        c.exp = i64::MIN;
        let t = sign(&c, "k1", &ek).unwrap();
        assert_eq!(peek(&t), Err(TicketError::Expired));
        assert!(v.verify(&t).is_err());
        let mut c = claims(60);
        c.nbf = Some(i64::MAX);
        let t = sign(&c, "k1", &ek).unwrap();
        assert_eq!(peek(&t), Err(TicketError::NotYetValid));
        assert!(v.verify(&t).is_err());
    }

    #[test]
    fn tampered_or_garbage_tickets_are_rejected() {
        let (ek, jwks) = key();
        let v = TicketVerifier::from_jwks(&jwks, None).unwrap();
        let t = sign(&claims(60), "k1", &ek).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        use base64::Engine;
        let eng = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value =
            serde_json::from_slice(&eng.decode(parts[1]).unwrap()).unwrap();
        payload["mode"] = "rw".into();
        payload["ws"] = "admin/other".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            eng.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert_eq!(v.verify(&forged), Err(TicketError::BadSignature));
        for bad in ["", "a.b", "a.b.c", "....", &"x".repeat(9000)] {
            assert!(v.verify(bad).is_err(), "{bad:?}");
            assert!(peek(bad).is_err(), "{bad:?}");
        }
        // alg none
        let none_header = eng.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let t = format!("{none_header}.{}.", parts[1]);
        assert!(v.verify(&t).is_err());
        // HS256 with the public key as the secret
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let x = eng.decode(&jwks.keys[0].x).unwrap();
        let t = jsonwebtoken::encode(&h, &claims(60), &EncodingKey::from_secret(&x)).unwrap();
        assert!(matches!(v.verify(&t), Err(TicketError::WrongAlgorithm(_))));
    }
}
