//! The TLS profile of the `tls://` listeners (placeholder until the bsi profile lands).

/// Builds the server configuration of the `bsi` profile.
///
/// # Errors
///
/// Always, for now: TLS listeners are not available yet.
pub fn server_config(
    _tls: &crate::config::TlsConfig,
) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    anyhow::bail!("TLS listeners are not available yet")
}
