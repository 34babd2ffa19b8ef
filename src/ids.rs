//! Typed opaque ids with a type prefix (`gr_…`, `ses_…`); random, 128 bits, base62.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` random base62 characters from the OS-seeded CSPRNG.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// A fresh random id (22 base62 characters, ~131 bits).
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_base62(22)))
            }
            /// Wraps an id read from a path or a store; any string is accepted (unknown ids are
            /// simply not found).
            pub fn from_string(s: String) -> Self {
                Self(s)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Whether the string has this id type's prefix and a sane length.
            pub fn looks_valid(s: &str) -> bool {
                s.starts_with($prefix)
                    && s.len() <= 64
                    && s[$prefix.len()..].bytes().all(|c| c.is_ascii_alphanumeric())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An access grant's id.
    GrantId,
    "gr_"
);
id_type!(
    /// A session's id (also the ticket's `jti`).
    SessionId,
    "ses_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_differ() {
        let a = GrantId::generate();
        let b = GrantId::generate();
        assert!(a.as_str().starts_with("gr_"));
        assert_ne!(a, b);
        assert!(GrantId::looks_valid(a.as_str()));
        assert!(!GrantId::looks_valid("ses_abc"));
        assert!(SessionId::looks_valid(SessionId::generate().as_str()));
    }
}
