//! Mutual TLS material and the rustls configurations built from it.
//!
//! A party's identity is bound to its certificate: the certificate must carry
//! the party name as a DNS `subjectAltName` (for example `DNS:alice`). The
//! dialer verifies that the server certificate names the party it dials
//! (rustls' WebPKI verifier, with the party name as the server name); the
//! acceptor verifies the client certificate against the CA, then checks that
//! it names the party claimed in the hello. TLS 1.3 only, ring as the one
//! crypto provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use xsilo_wire::PartyName;

use crate::error::SetupError;

/// A party's TLS material: the CA that signs every party's certificate, the
/// party's certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn pem_err(what: &'static str, path: &Path, reason: impl ToString) -> SetupError {
    SetupError::Pem {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl TlsIdentity {
    /// Loads PEM files: CA certificate(s), the party's certificate chain and
    /// its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, SetupError> {
        let ca_certs = read_certs("CA certificate", ca)?;
        let chain = read_certs("certificate chain", cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("private key", key, e))?;
        Self::from_der(ca_certs, chain, key)
    }

    /// Parses PEM text held in memory.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, SetupError> {
        let mem = Path::new("<memory>");
        let parse = |what, text: &str| {
            CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(what, mem, e))
        };
        let ca_certs = parse("CA certificate", ca)?;
        let chain = parse("certificate chain", cert)?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| pem_err("private key", mem, e))?;
        Self::from_der(ca_certs, chain, key)
    }

    /// Takes DER material.
    pub fn from_der(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, SetupError> {
        let mem = Path::new("<memory>");
        if ca.is_empty() {
            return Err(pem_err("CA certificate", mem, "no certificate found"));
        }
        if chain.is_empty() {
            return Err(pem_err("certificate chain", mem, "no certificate found"));
        }
        Ok(Self { ca, chain, key })
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Whether the leaf certificate names `party`.
    pub fn names(&self, party: &PartyName) -> bool {
        cert_names(self.leaf(), party)
    }

    fn roots(&self, party: &PartyName) -> Result<Arc<RootCertStore>, SetupError> {
        let mut roots = RootCertStore::empty();
        for ca in &self.ca {
            roots.add(ca.clone()).map_err(|e| SetupError::Tls {
                party: party.clone(),
                reason: format!("unusable CA certificate: {e}"),
            })?;
        }
        Ok(Arc::new(roots))
    }

    /// Builds the rustls server and client configurations for `party`, after
    /// checking that the certificate names it.
    pub(crate) fn rustls_configs(
        &self,
        party: &PartyName,
    ) -> Result<(rustls::ServerConfig, rustls::ClientConfig), SetupError> {
        let tls_err = |reason: String| SetupError::Tls {
            party: party.clone(),
            reason,
        };
        if !self.names(party) {
            return Err(tls_err(format!(
                "the certificate does not name party '{party}' (it needs the subjectAltName \
                 DNS:{party}); use the certificate issued for '{party}'"
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = self.roots(party)?;
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| tls_err(format!("cannot build the client verifier: {e}")))?;
        let alpn = xsilo_wire::alpn();
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
        server.alpn_protocols = vec![alpn.clone()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
        client.alpn_protocols = vec![alpn];
        Ok((server, client))
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Whether `cert` is valid for the DNS name `party`.
pub(crate) fn cert_names(cert: &CertificateDer<'_>, party: &PartyName) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(party.as_str()) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}
