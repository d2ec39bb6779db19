//! HTTPS: a CA and a `localhost` / `127.0.0.1` / `::1` server certificate generated at
//! start. Clients trust the CA (`SimHandle::ca_cert_pem`), as they would a corporate root;
//! a separate CA rather than a self-signed leaf keeps strict verifiers (webpki, OpenSSL
//! with X509_STRICT as in Python 3.13) happy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::error::SimError;

pub(crate) struct TlsMaterial {
    pub ca_pem: String,
    pub config: Arc<ServerConfig>,
}

fn tls_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

pub(crate) fn generate() -> Result<TlsMaterial, SimError> {
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "sf-simulator local CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "sf-simulator");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(tls_err)?;

    let leaf_key = KeyPair::generate().map_err(tls_err)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).map_err(tls_err)?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .map_err(tls_err)?;

    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
