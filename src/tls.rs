//! TLS set-up shared by the store's connections and the erasers' own.

/// Makes sure rustls has a crypto provider: ring, unless the bot installed one itself. A
/// build with two providers compiled in (ring through teloxide, aws-lc-rs through another
/// crate) would otherwise panic at the first `rediss://` connection.
pub(crate) fn ensure_crypto_provider() {
    #[cfg(feature = "tls")]
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
