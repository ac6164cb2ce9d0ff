//! One rustls crypto provider (ring) for the whole process.
//!
//! The broker client and the database driver both use rustls; with no
//! process-wide provider installed, rustls panics when it must choose one.

/// Installs ring as the process's rustls provider; idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
