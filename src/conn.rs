//! Connection set-up shared by the store's Redis connections and the erasers' own: the
//! TLS crypto provider and the connection manager's timeouts.

use std::time::Duration;

use redis::aio::ConnectionManagerConfig;

/// Reconnects with backoff up to 2 s; a command waits at most 5 s for Redis (the crate's own
/// store timeout, 2 s by default, is shorter).
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3)
}

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
