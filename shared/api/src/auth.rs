//! Who is calling. The tenant comes only from verified token claims, never from the path or
//! the body: an outer layer verifies the token (API Gateway's JWT authorizer in Lambda, the
//! HS256 middleware in [`crate::jwt`] locally) and inserts [`Claims`] into the request's
//! extensions; handlers take a [`Caller`] (any authenticated caller) or a [`Writer`] (one
//! allowed to change things).

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crm_export_core::TenantId;
use std::collections::{BTreeMap, BTreeSet};

/// The scope that allows changes (settings, skip, re-open, retry runs). Reading needs only
/// a verified token of the tenant.
pub const WRITE_SCOPE: &str = "crm-export/write";

/// Claims that may carry the tenant, in order of preference: our own claim, then the
/// Cognito custom attribute.
pub const TENANT_CLAIMS: [&str; 2] = ["tenant_id", "custom:tenant_id"];

/// Verified claims of the caller's token, as the outer layer saw them. Values are strings,
/// as API Gateway passes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub values: BTreeMap<String, String>,
    /// OAuth scopes granted (from the authorizer's list, the `scope` claim or `scp`).
    pub scopes: BTreeSet<String>,
}

impl Claims {
    /// From a decoded JWT payload: strings as they are, numbers and booleans as text;
    /// `scope` (space-separated) and `scp` (array or string) become scopes.
    pub fn from_json(payload: &serde_json::Map<String, serde_json::Value>) -> Self {
        use serde_json::Value;
        let mut claims = Claims::default();
        for (name, value) in payload {
            let text = match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            if matches!(name.as_str(), "scope" | "scp") {
                match value {
                    Value::String(s) => claims.add_scopes(s),
                    Value::Array(items) => {
                        for s in items.iter().filter_map(Value::as_str) {
                            claims.add_scopes(s);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(text) = text {
                claims.values.insert(name.clone(), text);
            }
        }
        claims
    }

    /// From string claims and an optional scope list (API Gateway's JWT authorizer).
    pub fn from_strings<'a>(
        values: impl IntoIterator<Item = (&'a String, &'a String)>,
        scopes: Option<&[String]>,
    ) -> Self {
        let mut claims = Claims::default();
        for (name, value) in values {
            if matches!(name.as_str(), "scope" | "scp") {
                claims.add_scopes(value);
            }
            claims.values.insert(name.clone(), value.clone());
        }
        for s in scopes.unwrap_or_default() {
            claims.add_scopes(s);
        }
        claims
    }

    fn add_scopes(&mut self, text: &str) {
        // API Gateway renders array claims as "[a b]"; strip the brackets.
        let text = text.trim().trim_start_matches('[').trim_end_matches(']');
        self.scopes.extend(
            text.split_whitespace()
                .map(|s| s.trim_matches(',').to_string()),
        );
    }
}

/// An authenticated caller of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    /// Who is acting (the token's `sub`), recorded in the settings history.
    pub actor: String,
    pub can_write: bool,
}

impl Caller {
    /// The caller the claims describe; 401 when they name no valid tenant or subject.
    pub fn from_claims(claims: &Claims) -> Result<Caller, ApiError> {
        let mut named = TENANT_CLAIMS
            .iter()
            .filter_map(|c| claims.values.get(*c))
            .collect::<BTreeSet<_>>()
            .into_iter();
        let tenant = match (named.next(), named.next()) {
            (Some(t), None) => TenantId::new(t.as_str()).map_err(|_| {
                ApiError::unauthenticated("the token's tenant claim is not a valid tenant id")
            })?,
            (None, _) => {
                return Err(ApiError::unauthenticated(
                    "the token carries no tenant claim (tenant_id or custom:tenant_id)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::unauthenticated(
                    "the token's tenant claims disagree",
                ))
            }
        };
        let actor = claims
            .values
            .get("sub")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ApiError::unauthenticated("the token carries no subject (sub)"))?
            .to_string();
        Ok(Caller {
            tenant,
            actor,
            can_write: claims.scopes.contains(WRITE_SCOPE),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let claims = parts
            .extensions
            .get::<Claims>()
            .ok_or_else(|| ApiError::unauthenticated("a bearer token is required"))?;
        Caller::from_claims(claims)
    }
}

/// A caller allowed to change things (scope [`WRITE_SCOPE`]); 403 otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.can_write {
            return Err(ApiError::forbidden(format!(
                "this change needs the {WRITE_SCOPE} scope"
            )));
        }
        Ok(Writer(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Claims {
        Claims::from_json(v.as_object().unwrap())
    }

    #[test]
    fn tenant_actor_and_scopes_come_from_the_claims() {
        let c = Caller::from_claims(&claims(json!({
            "sub": "u-1", "tenant_id": "acme", "scope": "crm-export/read crm-export/write", "exp": 1
        })))
        .unwrap();
        assert_eq!(c.tenant.as_str(), "acme");
        assert_eq!(c.actor, "u-1");
        assert!(c.can_write);

        let c = Caller::from_claims(&claims(json!({
            "sub": "u-2", "custom:tenant_id": "globex", "scp": ["crm-export/read"]
        })))
        .unwrap();
        assert_eq!(c.tenant.as_str(), "globex");
        assert!(!c.can_write);
    }

    #[test]
    fn missing_invalid_or_conflicting_tenants_are_refused() {
        for bad in [
            json!({"sub": "u"}),
            json!({"sub": "u", "tenant_id": "Not_A_Tenant"}),
            json!({"sub": "u", "tenant_id": "acme", "custom:tenant_id": "globex"}),
            json!({"tenant_id": "acme"}),
            json!({"tenant_id": "acme", "sub": "  "}),
        ] {
            let e = Caller::from_claims(&claims(bad.clone())).unwrap_err();
            assert_eq!(e.code, "unauthenticated", "{bad}");
        }
        // The same tenant under both names is not a conflict.
        assert!(Caller::from_claims(&claims(
            json!({"sub": "u", "tenant_id": "acme", "custom:tenant_id": "acme"})
        ))
        .is_ok());
    }

    #[test]
    fn api_gateway_bracketed_scopes_are_read() {
        let values = [("scope".to_string(), "[crm-export/write other]".to_string())];
        let c = Claims::from_strings(values.iter().map(|(a, b)| (a, b)), None);
        assert!(c.scopes.contains(WRITE_SCOPE));
        assert!(c.scopes.contains("other"));
    }
}
