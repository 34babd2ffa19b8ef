//! Ticket parsing on arbitrary input: `peek` and `TicketVerifier::verify` (fixed JWKS, pinned
//! issuer) must never panic; a ticket `verify` accepts must pass `peek` with the same claims; and
//! arbitrary claims under a valid header with a borrowed signature must never verify.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use grantfs::ticket::{self, TicketClaims, TicketVerifier};
use libfuzzer_sys::fuzz_target;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

static VERIFIER: LazyLock<TicketVerifier> = LazyLock::new(grantfs_fuzz::verifier);

/// A real ticket's header, payload and signature, to graft arbitrary claims onto.
static GRAFT: LazyLock<(String, String, String)> = LazyLock::new(|| {
    let claims = TicketClaims {
        iss: grantfs_fuzz::ISSUER.into(),
        aud: grantfs::TICKET_AUDIENCE.into(),
        sub: "task-1".into(),
        jti: "ses_x".into(),
        iat: 0,
        exp: 4_102_444_800,
        nbf: None,
        ws: "acme/ws".into(),
        tenant: "acme".into(),
        grant: "gr_x".into(),
        mode: grantfs::Mode::Ro,
    };
    let t = grantfs_fuzz::sign(&claims, grantfs_fuzz::KID);
    let mut parts = t.split('.').map(str::to_owned);
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next())
});

fn check(token: &str) -> Result<TicketClaims, ticket::TicketError> {
    let peeked = ticket::peek(token);
    let verified = VERIFIER.verify(token);
    match &verified {
        Ok(claims) => assert_eq!(
            peeked.as_ref(),
            Ok(claims),
            "verify accepted what peek refused"
        ),
        // Error messages are logged and sent to users: formatting them must not panic either.
        Err(e) => drop((e.to_string(), e.code())),
    }
    if let Ok(c) = &peeked {
        drop(c.expires_at().to_rfc3339());
    }
    verified
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a ticket.
    let _ = check(&String::from_utf8_lossy(data));

    // 2. The bytes as the claims of a ticket with a valid header and another ticket's signature:
    //    peek parses them, verify must refuse them.
    let (header, payload, sig) = &*GRAFT;
    let grafted = B64.encode(data);
    if let Ok(c) = check(&format!("{header}.{grafted}.{sig}")) {
        assert_eq!(&grafted, payload, "grafted claims verified: {c:?}");
    }

    // 3. Claims that parse, really signed: verify runs its own time and audience checks on
    //    arbitrary claim values.
    if let Ok(claims) = serde_json::from_slice::<TicketClaims>(data) {
        let t = grantfs_fuzz::sign(&claims, grantfs_fuzz::KID);
        if let Ok(c) = check(&t) {
            assert_eq!(c, claims);
        }
    }
});
