//! Local authentication: verifies an HS256 bearer JWT with a configured secret and inserts
//! the same [`Claims`] extension that API Gateway's JWT authorizer provides in Lambda. Like
//! the authorizer, it stands in front of every route: no valid token, no answer but 401.

use crate::auth::Claims;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::sync::Arc;

/// The shortest secret accepted: HS256 with a short secret is open to brute force.
pub const MIN_SECRET_BYTES: usize = 32;

/// Verifies HS256 tokens. Holds the secret, so it is deliberately not `Debug`.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT secret must be at least {MIN_SECRET_BYTES} bytes")]
    SecretTooShort,
    #[error("signing the token failed: {0}")]
    Signing(String),
}

impl JwtVerifier {
    pub fn hs256(secret: &[u8]) -> Result<Self, JwtError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(JwtError::SecretTooShort);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.validate_nbf = true;
        // No audience is configured locally; API Gateway checks it in the cloud.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            key: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// The token's claims if its signature, algorithm and expiry check out.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map(|data| Claims::from_json(&data.claims))
        .map_err(|e| e.to_string())
    }
}

/// Signs an HS256 token with the given claims (the local server and tests issue tokens).
pub fn issue_hs256(secret: &[u8], claims: &serde_json::Value) -> Result<String, JwtError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(JwtError::SecretTooShort);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| JwtError::Signing(e.to_string()))
}

/// Middleware: `Authorization: Bearer <jwt>` verified, its claims inserted; else 401.
pub async fn require_bearer(
    State(verifier): State<Arc<JwtVerifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let claims = match token {
        None => Err(ApiError::unauthenticated(
            "send Authorization: Bearer <token>",
        )),
        Some(t) => verifier.verify(t).map_err(|reason| {
            // The reason (expired, bad signature) helps the caller; the token is not logged.
            tracing::debug!(%reason, "bearer token refused");
            ApiError::unauthenticated(format!("the bearer token is not valid: {reason}"))
        }),
    };
    match claims {
        Ok(claims) => {
            req.extensions_mut().insert(claims);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn exp(offset: i64) -> i64 {
        chrono::Utc::now().timestamp() + offset
    }

    #[test]
    fn a_signed_token_round_trips_and_tampering_is_refused() {
        let token = issue_hs256(
            SECRET,
            &json!({"sub": "u", "tenant_id": "acme", "exp": exp(60)}),
        )
        .unwrap();
        let v = JwtVerifier::hs256(SECRET).unwrap();
        assert_eq!(v.verify(&token).unwrap().values["tenant_id"], "acme");

        let other = JwtVerifier::hs256(b"another-secret-another-secret-xx").unwrap();
        assert!(other.verify(&token).is_err());
        let mut bad = token.clone();
        bad.pop();
        assert!(v.verify(&bad).is_err());
    }

    #[test]
    fn expired_or_unsigned_tokens_are_refused() {
        let v = JwtVerifier::hs256(SECRET).unwrap();
        let old = issue_hs256(
            SECRET,
            &json!({"sub": "u", "tenant_id": "a", "exp": exp(-3600)}),
        )
        .unwrap();
        assert!(v.verify(&old).is_err());
        let no_exp = issue_hs256(SECRET, &json!({"sub": "u", "tenant_id": "a"})).unwrap();
        assert!(v.verify(&no_exp).is_err());
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwidGVuYW50X2lkIjoiYSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(v.verify(none).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            JwtVerifier::hs256(b"short").err(),
            Some(JwtError::SecretTooShort)
        );
    }
}
