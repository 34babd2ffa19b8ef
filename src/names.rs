//! The names of the contract (handle, workspace, tenant slug, runtime id, mode) as validated types;
//! what a name may contain is decided here and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid name; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {rule}")]
pub struct NameError {
    pub what: &'static str,
    pub rule: &'static str,
}

fn lower_slug(s: &str, what: &'static str) -> Result<(), NameError> {
    let rule = "must match ^[a-z0-9][a-z0-9-]{0,62}$";
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError { what, rule })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(&s)?;
                Ok(Self(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// An account handle: `^[a-z0-9][a-z0-9-]{0,62}$`.
    Handle,
    |s| lower_slug(s, "account handle")
);
name_type!(
    /// A tenant slug, unique per account: `^[a-z0-9][a-z0-9-]{0,62}$`.
    TenantSlug,
    |s| lower_slug(s, "tenant slug")
);
name_type!(
    /// A workspace name: `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`.
    WorkspaceName,
    |s| {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[1..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
        if ok {
            Ok(())
        } else {
            Err(NameError {
                what: "workspace name",
                rule: "must match ^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$",
            })
        }
    }
);
name_type!(
    /// An opaque runtime id: 1 to 128 bytes of `[A-Za-z0-9._:@-]`.
    RuntimeId,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._:@-".contains(&c));
        if ok {
            Ok(())
        } else {
            Err(NameError {
                what: "runtime id",
                rule: "must be 1 to 128 bytes of [A-Za-z0-9._:@-]",
            })
        }
    }
);

/// A workspace's full name, `handle/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WorkspaceRef {
    pub handle: Handle,
    pub name: WorkspaceName,
}

impl WorkspaceRef {
    /// Parses `handle/name`, `grantfs://handle/name`, or a bare `name` (which then takes
    /// `default_handle`; without one, a bare name is an error).
    pub fn parse_with_default(s: &str, default_handle: Option<&Handle>) -> Result<Self, NameError> {
        let rest = s.strip_prefix("grantfs://").unwrap_or(s);
        match rest.split_once('/') {
            Some((h, n)) => Ok(Self {
                handle: Handle::parse(h)?,
                name: WorkspaceName::parse(n)?,
            }),
            None if rest.len() == s.len() => match default_handle {
                Some(h) => Ok(Self {
                    handle: h.clone(),
                    name: WorkspaceName::parse(rest)?,
                }),
                None => Err(NameError {
                    what: "workspace reference",
                    rule: "must be handle/name or grantfs://handle/name",
                }),
            },
            None => Err(NameError {
                what: "workspace reference",
                rule: "must be grantfs://handle/name",
            }),
        }
    }

    pub fn parse(s: &str) -> Result<Self, NameError> {
        Self::parse_with_default(s, None)
    }

    /// The workspace's directory below a data root: `<handle>/<name>`.
    pub fn storage_path(&self) -> String {
        format!("{}/{}", self.handle, self.name)
    }
}

impl fmt::Display for WorkspaceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.handle, self.name)
    }
}
impl TryFrom<String> for WorkspaceRef {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}
impl From<WorkspaceRef> for String {
    fn from(v: WorkspaceRef) -> String {
        v.to_string()
    }
}
impl FromStr for WorkspaceRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// Access mode of a grant or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ro,
    Rw,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ro => "ro",
            Mode::Rw => "rw",
        }
    }
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s {
            "ro" => Ok(Mode::Ro),
            "rw" => Ok(Mode::Rw),
            _ => Err(NameError {
                what: "mode",
                rule: "must be \"ro\" or \"rw\"",
            }),
        }
    }
    /// Whether a grant of mode `self` allows a session of mode `wanted`.
    pub fn allows(self, wanted: Mode) -> bool {
        self == Mode::Rw || wanted == Mode::Ro
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl FromStr for Mode {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rule() {
        assert!(TenantSlug::parse("acme").is_ok());
        assert!(TenantSlug::parse("0-a").is_ok());
        assert!(TenantSlug::parse(&"a".repeat(63)).is_ok());
        for bad in ["", "-a", "Acme", "a_b", "a/b", "é", "a\0", &"a".repeat(64)] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn workspace_names_allow_case_and_underscore() {
        assert!(WorkspaceName::parse("My_ws-1").is_ok());
        for bad in ["", "_a", "a.b", "a/b", "..", &"a".repeat(64)] {
            assert!(WorkspaceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn runtime_ids_are_opaque_but_bounded() {
        assert!(RuntimeId::parse("task-123:a@b.c_d").is_ok());
        assert!(RuntimeId::parse(&"x".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "a\n", &"x".repeat(129)] {
            assert!(RuntimeId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn workspace_refs_take_three_forms() {
        let h = Handle::parse("acme-platform").unwrap();
        let full = WorkspaceRef::parse("acme-platform/my-ws").unwrap();
        assert_eq!(
            WorkspaceRef::parse("grantfs://acme-platform/my-ws").unwrap(),
            full
        );
        assert_eq!(
            WorkspaceRef::parse_with_default("my-ws", Some(&h)).unwrap(),
            full
        );
        assert!(WorkspaceRef::parse("my-ws").is_err());
        assert!(WorkspaceRef::parse("a/b/c").is_err());
        assert!(WorkspaceRef::parse("grantfs://my-ws").is_err());
        assert_eq!(full.to_string(), "acme-platform/my-ws");
    }

    #[test]
    fn ro_grant_never_allows_rw() {
        assert!(Mode::Rw.allows(Mode::Ro));
        assert!(Mode::Rw.allows(Mode::Rw));
        assert!(Mode::Ro.allows(Mode::Ro));
        assert!(!Mode::Ro.allows(Mode::Rw));
    }
}
