use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong when loading an org, starting the server or using the admin API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read org file {path}: {source}")]
    ReadOrg {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("org file {path} is not a valid org definition: {message}")]
    ParseOrg { path: PathBuf, message: String },
    #[error("invalid org definition: {0}")]
    InvalidOrg(String),
    #[error("no object named {0} in the org definition")]
    UnknownObject(String),
    #[error("no OAuth client with client_id {0} in the org definition")]
    UnknownClient(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}
