//! The process's one TLS stack: rustls with ring, shared by kube and reqwest. Installed once,
//! before the first https client; kube panics at its first client without one.

/// Installs the process-wide TLS provider (ring); a second call does nothing.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
