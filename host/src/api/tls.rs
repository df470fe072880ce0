//! HTTPS for the API (rustls with the ring provider): `[api] tls_cert`
//! (a PEM certificate chain) and `tls_key` (a PEM private key).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server config for `cert` and `key`, with errors naming the file.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("[api] tls_cert {}: cannot read it", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "[api] tls_cert {}: not a PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("[api] tls_cert {}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("[api] tls_key {}: not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("[api] tls_cert and tls_key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
