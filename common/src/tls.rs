//! TLS toward the coordinator's HTTP API: the one way the worker and the
//! CLI build their HTTP client, so both speak `https://` to a coordinator
//! behind a TLS-terminating proxy and trust the same extra CA.
//!
//! The client verifies with the system's roots (rustls with the platform
//! verifier). A private CA is added with `TRIBUTARY_CA_FILE`: a PEM file of
//! one or more certificates, trusted in addition to the system's. A file
//! that cannot be read or holds no certificate is an error, never ignored:
//! a silently dropped CA would only show up later as failed handshakes.
//!
//! Postgres and RabbitMQ take their TLS settings from their URLs
//! (`?sslmode=verify-full&sslrootcert=…`, `amqps://`); see the README.

use std::path::{Path, PathBuf};

/// The variable naming a PEM file of extra CA certificates to trust.
pub const CA_FILE_ENV: &str = "TRIBUTARY_CA_FILE";

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {path} ({CA_FILE_ENV}): {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is not PEM, or holds no certificate.
    #[error(
        "the CA file {path} ({CA_FILE_ENV}) holds no PEM certificate: give a file with `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file is unusable.
    #[error("the CA file {path} ({CA_FILE_ENV}) is unusable: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// The bearer token cannot be sent in a header.
    #[error("the API token may hold only visible ASCII characters")]
    BadToken,
    /// The client could not be built (e.g. its TLS backend failed to start).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A `Result` with [`TlsError`].
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The CA file named by `TRIBUTARY_CA_FILE`, if set and not empty.
pub fn ca_file_from_env() -> Option<PathBuf> {
    std::env::var_os(CA_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A client builder for the coordinator's API that trusts the system's
/// roots and the CA file named by `TRIBUTARY_CA_FILE`. Add headers or
/// timeouts, then `build()`.
pub fn http_client_builder() -> Result<reqwest::ClientBuilder> {
    http_client_builder_with(ca_file_from_env().as_deref())
}

/// [`http_client_builder`], built.
pub fn http_client() -> Result<reqwest::Client> {
    Ok(http_client_builder()?.build()?)
}

/// [`http_client_builder`], sending `Authorization: Bearer <token>` on
/// every request when a token is given (the header is marked sensitive, so
/// it is never logged), built.
pub fn http_client_with_token(token: Option<&str>) -> Result<reqwest::Client> {
    Ok(http_client_builder_with_token(token)?.build()?)
}

/// [`http_client_with_token`], not built yet: add timeouts, then `build()`.
pub fn http_client_builder_with_token(token: Option<&str>) -> Result<reqwest::ClientBuilder> {
    let mut builder = http_client_builder()?;
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TlsError::BadToken)?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    Ok(builder)
}

/// A client builder that trusts the system's roots and `ca_file`'s
/// certificates, if given.
pub fn http_client_builder_with(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder> {
    let builder = reqwest::Client::builder();
    let Some(path) = ca_file else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
        path: path.to_owned(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| TlsError::BadCa {
        path: path.to_owned(),
        source,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(builder.tls_certs_merge(certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ca_file_is_the_system_roots() {
        let client = http_client_builder_with(None).and_then(|b| Ok(b.build()?));
        assert!(client.is_ok(), "{client:?}");
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let err = http_client_builder_with(Some(Path::new("/nonexistent/ca.pem")))
            .expect_err("missing file");
        assert!(matches!(err, TlsError::ReadCa { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/ca.pem") && text.contains(CA_FILE_ENV),
            "{text}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("tributary-not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "this is not a certificate\n").expect("write");
        let err = http_client_builder_with(Some(&path)).expect_err("no certificates");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, TlsError::NoCertificates { .. }), "{err:?}");
    }
}
