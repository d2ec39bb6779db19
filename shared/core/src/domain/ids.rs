use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn valid_slug(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

macro_rules! slug_id {
    ($name:ident, $what:literal, $rule:literal, $allow_underscore:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let ok = valid_slug(&s, 63) && ($allow_underscore || !s.contains('_'));
                if ok {
                    Ok(Self(s))
                } else {
                    Err(IdError {
                        what: $what,
                        value: s,
                        rule: $rule,
                    })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

slug_id!(
    TenantId,
    "tenant id",
    "must match [a-z0-9][a-z0-9-]{0,62}",
    false
);
slug_id!(JobId, "job id", "must match [a-z0-9][a-z0-9_-]{0,62}", true);

impl JobId {
    /// The pseudo-job whose lease is one of a tenant's request slots (the tenant-wide
    /// in-flight window). The leading underscore keeps it apart from every real job id.
    pub fn tenant_slot(i: u32) -> JobId {
        JobId(format!("_slot-{i}"))
    }
}

/// One export stream: a tenant's job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobRef {
    pub tenant: TenantId,
    pub job: JobId,
}

impl JobRef {
    pub fn new(tenant: TenantId, job: JobId) -> Self {
        Self { tenant, job }
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.job)
    }
}

/// The identity of a record in the CRM: its external-id value, folded to lower case when
/// the CRM's external-id field is case-insensitive (then `Ab` and `aB` are one key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordKey(String);

impl RecordKey {
    /// Builds the identity of an external-id value. Empty values are refused: a record
    /// without its key cannot be upserted.
    pub fn from_external_id(value: &str, case_insensitive: bool) -> Option<Self> {
        let v = value.trim();
        if v.is_empty() {
            return None;
        }
        Some(Self(if case_insensitive {
            v.to_lowercase()
        } else {
            v.to_string()
        }))
    }
    /// A key exactly as stored (already normalised).
    pub fn from_stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one run; also the lease owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_spec_pattern() {
        assert!(TenantId::new("acme-1").is_ok());
        assert!(TenantId::new("a").is_ok());
        assert!(TenantId::new("-acme").is_err());
        assert!(TenantId::new("Acme").is_err());
        assert!(TenantId::new("acme_1").is_err());
        assert!(TenantId::new("").is_err());
        assert!(TenantId::new("a".repeat(64)).is_err());
        assert!(TenantId::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn case_insensitive_keys_fold() {
        let a = RecordKey::from_external_id("AbC", true).unwrap();
        let b = RecordKey::from_external_id("aBc", true).unwrap();
        assert_eq!(a, b);
        let c = RecordKey::from_external_id("AbC", false).unwrap();
        assert_ne!(c, RecordKey::from_external_id("aBc", false).unwrap());
        assert!(RecordKey::from_external_id("  ", false).is_none());
    }
}
