//! Lambda: the router behind API Gateway (HTTP API, payload 2.0) with a JWT authorizer.
//! API Gateway has already verified the token; its claims arrive in the request context
//! (`requestContext.authorizer.jwt.claims` and `.scopes`), which `lambda_http` keeps in the
//! request's extensions. [`insert_lambda_claims`] turns them into [`Claims`].
//!
//! ```text
//! lambda_http::run(crm_export_api::lambda::lambda_router(state)).await
//! ```

use crate::auth::Claims;
use crate::state::ApiState;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;

/// The claims API Gateway's JWT authorizer verified; `None` without a JWT authorizer.
pub fn claims_from_request_context(ctx: &RequestContext) -> Option<Claims> {
    #[allow(unreachable_patterns)] // other variants exist only with other lambda_http features
    match ctx {
        RequestContext::ApiGatewayV2(ctx) => {
            let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
            Some(Claims::from_strings(&jwt.claims, jwt.scopes.as_deref()))
        }
        _ => None,
    }
}

/// Middleware: inserts the authorizer's claims, if any. Without them handlers answer 401,
/// so a route deployed without the authorizer serves nobody.
pub async fn insert_lambda_claims(mut req: Request, next: Next) -> Response {
    // Never trust a Claims extension that did not come from the request context.
    req.extensions_mut().remove::<Claims>();
    let claims = req
        .extensions()
        .request_context_ref()
        .and_then(claims_from_request_context);
    if let Some(claims) = claims {
        req.extensions_mut().insert(claims);
    }
    next.run(req).await
}

/// The router as served by the settings-api Lambda function.
pub fn lambda_router(state: ApiState) -> Router {
    crate::router(state).layer(middleware::from_fn(insert_lambda_claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;

    fn context_of(json: &str) -> RequestContext {
        let req = lambda_http::request::from_str(json).expect("a valid API Gateway v2 event");
        req.request_context()
    }

    #[test]
    fn cognito_access_token_claims_give_tenant_actor_and_write_scope() {
        let ctx = context_of(include_str!("../tests/data/apigw_v2_get_settings.json"));
        let claims = claims_from_request_context(&ctx).expect("jwt claims");
        let caller = Caller::from_claims(&claims).unwrap();
        assert_eq!(caller.tenant.as_str(), "acme");
        assert_eq!(caller.actor, "7c1e2f3a-0000-4000-8000-00000000abcd");
        assert!(caller.can_write);
    }

    #[test]
    fn custom_tenant_attribute_and_authorizer_scopes_are_read() {
        let ctx = context_of(include_str!(
            "../tests/data/apigw_v2_patch_settings_read_only.json"
        ));
        let caller = Caller::from_claims(&claims_from_request_context(&ctx).unwrap()).unwrap();
        assert_eq!(caller.tenant.as_str(), "globex");
        assert!(!caller.can_write, "crm-export/read only");
    }

    #[test]
    fn no_authorizer_means_no_claims() {
        let ctx = context_of(include_str!("../tests/data/apigw_v2_no_authorizer.json"));
        assert_eq!(claims_from_request_context(&ctx), None);
    }
}
