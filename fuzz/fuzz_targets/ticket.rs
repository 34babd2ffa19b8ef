//! Ticket parsing on arbitrary input: `peek` and `TicketVerifier::verify` (fixed JWKS, pinned
//! issuer) must never panic, and a ticket `verify` accepts must also pass `peek` with the same claims.
#![no_main]

use std::sync::LazyLock;

use grantfs::ticket::{self, TicketVerifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<TicketVerifier> = LazyLock::new(grantfs_fuzz::verifier);

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let peeked = ticket::peek(&token);
    let verified = VERIFIER.verify(&token);
    if let Ok(claims) = &verified {
        assert_eq!(peeked.as_ref(), Ok(claims), "verify accepted what peek refused");
    }
    // Error messages are logged and sent to users: formatting them must not panic either.
    if let Err(e) = &verified {
        let _ = (e.to_string(), e.code());
    }
    if let Ok(c) = &peeked {
        let _ = c.expires_at().to_rfc3339();
    }
});
