//! Errors of building a client. Failures of calls are not errors of this crate: they are
//! classified into the port's `RequestFailure` (see [`crate::classify`]).

/// The configuration cannot give a working client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("login_url is not a usable http(s) URL: {0}")]
    LoginUrl(String),
    #[error("api_version must look like \"62.0\", got {0:?}")]
    ApiVersion(String),
    #[error("extra_root_ca_pem holds no usable PEM certificate: {0}")]
    RootCa(String),
    #[error("building the HTTP client failed: {0}")]
    Http(String),
}
