//! A string that must never reach a log line or a `Debug` dump (client secrets, refresh
//! and access tokens).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A credential or token. `Debug` prints `Secret(***)`, there is no `Display`, and the
/// value is read only through [`Secret::expose`], so a `{:?}` of any struct holding one
/// is safe to log. It serialises as the plain string, because the configuration holding
/// it is itself stored in a secret store and must round-trip.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_serde_keeps_it() {
        let s = Secret::new("5Aep861-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"5Aep861-very-secret\""
        );
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back.expose(), "abc");
    }
}
