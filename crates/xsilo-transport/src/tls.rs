//! Mutual TLS material and the rustls configurations built from it.
//!
//! A party's identity is normally bound to its certificate: the certificate
//! carries the party name as a DNS `subjectAltName` (for example
//! `DNS:alice`), and that is [`IdentityMode::Bound`]. The dialer verifies
//! that the server certificate names the party it dials (rustls' WebPKI
//! verifier, with the party name as the server name); the acceptor verifies
//! the client certificate against the CA, then checks that it names the
//! party claimed in the hello. TLS 1.3 only, ring as the one crypto
//! provider.
//!
//! A certificate that names **no party of the job** is a shared certificate
//! ([`IdentityMode::Shared`], RayFed's set-up: one certificate, often
//! self-signed and its own CA, used by every party). Mutual TLS stays on and
//! every peer must still present a certificate that chains to the configured
//! CA, but party names are no longer bound to certificates: a peer whose
//! certificate names no party of the job is taken to be the party its hello
//! claims. What shared mode gives up: any holder of a certificate the CA
//! signed (the shared one included, so every party and whoever else holds
//! its key) can claim to be any party of the job, and can dial a party
//! pretending to be any other. A certificate that does name a party of the
//! job is still held to that party, at both ends. RFC 0001, "Handshake and
//! identity", has the rules.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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
    /// Fails naming the file when one cannot be read or parsed, and naming
    /// both files when the key does not belong to the certificate.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, SetupError> {
        let ca_certs = read_certs("CA certificate", ca)?;
        let chain = read_certs("certificate chain", cert)?;
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("private key", key, e))?;
        check_key_fits(&chain, &key_der, cert, key)?;
        Self::from_der(ca_certs, chain, key_der)
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
        check_key_fits(&chain, &key, mem, mem)?;
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

    /// How `party`'s identity relates to this certificate: [`IdentityMode::Bound`]
    /// if the leaf names `party`, else [`IdentityMode::Shared`]. Whether a
    /// shared certificate may be used in a job also depends on the job's
    /// other parties: see [`TlsIdentity::mode_in_job`].
    pub fn mode(&self, party: &PartyName) -> IdentityMode {
        if self.names(party) {
            IdentityMode::Bound
        } else {
            IdentityMode::Shared
        }
    }

    /// The mode of `party` in a job of `parties` (the local party may be
    /// among them): [`IdentityMode::Bound`] if the leaf names `party`,
    /// [`IdentityMode::Shared`] if it names no party of the job, and an
    /// error naming both parties if it names another party of the job (for
    /// example alice started with bob's certificate).
    pub fn mode_in_job<'a>(
        &self,
        party: &PartyName,
        parties: impl IntoIterator<Item = &'a PartyName>,
    ) -> Result<IdentityMode, SetupError> {
        check_mode_in_job(self.leaf(), party, parties)
    }

    /// The DNS names the leaf certificate presents (`DNS:localhost`), for
    /// messages.
    pub fn presented_names(&self) -> Vec<String> {
        presented_names(self.leaf())
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

    /// Builds the rustls server and client configurations for `party`. In
    /// both modes the server requires a client certificate chaining to the
    /// CA (mutual TLS is always on). The client verifies the server's chain
    /// to the CA and, in [`IdentityMode::Bound`], that the certificate names
    /// the dialled party (WebPKI with the party as the server name); in
    /// [`IdentityMode::Shared`] the name is not checked in TLS (a shared
    /// certificate names `localhost` or the like, never the dialled party):
    /// the dialer checks after the handshake that the certificate names the
    /// dialled party or no party of the job (`quic/outbound.rs`).
    pub(crate) fn rustls_configs(
        &self,
        party: &PartyName,
    ) -> Result<(rustls::ServerConfig, rustls::ClientConfig), SetupError> {
        let tls_err = |reason: String| SetupError::Tls {
            party: party.clone(),
            reason,
        };
        if is_ca_certificate(self.leaf()) {
            return Err(tls_err(
                "the certificate is a CA certificate (basicConstraints CA:TRUE), which every \
                 peer's TLS refuses as a party's own certificate (WebPKI: CaUsedAsEndEntity), \
                 even when it is also the CA; issue it with CA:FALSE or without \
                 basicConstraints (RayFed's generate_tls_certs.py adds none; `openssl req \
                 -x509` adds CA:TRUE unless given -addext basicConstraints=critical,CA:FALSE)"
                    .into(),
            ));
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
        let verifier = self.server_verifier(party)?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
        client.alpn_protocols = vec![alpn];
        Ok((server, client))
    }

    /// The dialer's verifier of server certificates for `party`'s mode:
    /// rustls' WebPKI verifier (chain and name) when bound, the chain alone
    /// when shared.
    fn server_verifier(
        &self,
        party: &PartyName,
    ) -> Result<Arc<dyn ServerCertVerifier>, SetupError> {
        let provider = rustls::crypto::ring::default_provider();
        let roots = self.roots(party)?;
        Ok(match self.mode(party) {
            IdentityMode::Bound => rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                Arc::new(provider),
            )
            .build()
            .map_err(|e| SetupError::Tls {
                party: party.clone(),
                reason: format!("cannot build the server verifier: {e}"),
            })?,
            IdentityMode::Shared => Arc::new(ChainOnlyServerVerifier {
                roots,
                algorithms: provider.signature_verification_algorithms,
            }),
        })
    }
}

/// How a party's name relates to its certificate, from the local party's
/// certificate: [`TlsIdentity::mode`], [`TlsIdentity::mode_in_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityMode {
    /// The certificate names the party (`DNS:<party>`): its name is bound
    /// to it. The dialer checks that the server names the party dialled,
    /// the acceptor that the client names the party its hello claims. The
    /// default, and what `xsilo certs` issues.
    Bound,
    /// The certificate names no party of the job: one certificate shared by
    /// every party (RayFed's). The chain to the CA is still checked both
    /// ways, but a peer whose certificate names no party of the job is
    /// taken to be the party it claims: any holder of a certificate the CA
    /// signed can claim any party name. A peer whose certificate names a
    /// party of the job is still held to that party.
    Shared,
}

impl std::fmt::Display for IdentityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bound => "bound",
            Self::Shared => "shared",
        })
    }
}

/// [`TlsIdentity::mode_in_job`] on a leaf certificate.
pub(crate) fn check_mode_in_job<'a>(
    leaf: &CertificateDer<'_>,
    party: &PartyName,
    parties: impl IntoIterator<Item = &'a PartyName>,
) -> Result<IdentityMode, SetupError> {
    if cert_names(leaf, party) {
        return Ok(IdentityMode::Bound);
    }
    match parties
        .into_iter()
        .find(|p| *p != party && cert_names(leaf, p))
    {
        Some(other) => Err(SetupError::Tls {
            party: party.clone(),
            reason: format!(
                "the certificate does not name party '{party}' (it needs the subjectAltName \
                 DNS:{party}) but names party '{other}', another party of the job; use the \
                 certificate issued for '{party}'"
            ),
        }),
        None => Ok(IdentityMode::Shared),
    }
}

/// The server-certificate verifier of a party in [`IdentityMode::Shared`]:
/// exactly rustls' WebPKI verifier (the chain to the configured CA, for
/// server use, valid now; the handshake signatures) except the server
/// name, which a shared certificate does not carry. The dialer checks the
/// name against the job's parties once the handshake is done.
#[derive(Debug)]
struct ChainOnlyServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnlyServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Fails unless `key` is the private key of the first certificate of
/// `chain`; the error names both files.
fn check_key_fits(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), SetupError> {
    let mismatch = |reason: String| SetupError::KeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason,
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| mismatch(format!("the key cannot be used: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        // The key type cannot tell its public key; rustls then checks at
        // the first handshake.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(mismatch("it is the key of another certificate".into()))
        }
        Err(e) => Err(mismatch(e.to_string())),
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

/// Whether `cert` is a CA certificate (basicConstraints `CA:TRUE`), which
/// WebPKI refuses as an end-entity certificate (`CaUsedAsEndEntity`): no
/// peer would accept it as a party's. Judged at a time within its validity
/// (WebPKI checks the dates first).
pub(crate) fn is_ca_certificate(cert: &CertificateDer<'_>) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let v = validity_of(&ee);
    let mid = v.not_before + v.not_after.duration_since(v.not_before).unwrap_or_default() / 2;
    let at = UnixTime::since_unix_epoch(mid.duration_since(UNIX_EPOCH).unwrap_or_default());
    matches!(
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[],
            &[],
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        ),
        Err(webpki::Error::CaUsedAsEndEntity)
    )
}

/// The first of `parties` that `cert` names.
pub(crate) fn named_party<'a>(
    cert: &CertificateDer<'_>,
    parties: impl IntoIterator<Item = &'a PartyName>,
) -> Option<&'a PartyName> {
    parties.into_iter().find(|p| cert_names(cert, p))
}

/// The DNS names `cert` presents, as `DNS:<name>`. WebPKI lists them only
/// in the error for a name the certificate does not carry, so it is asked
/// for a reserved name (`.invalid`, RFC 2606) no certificate of ours has.
pub(crate) fn presented_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    let Ok(probe) = ServerName::try_from("no-such-name.xsilo.invalid") else {
        return Vec::new();
    };
    match ee.verify_is_valid_for_subject_name(&probe) {
        Err(webpki::Error::CertNotValidForName(ctx)) => tidy_names(&ctx.presented),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Inspection of a party's own TLS files (`xsilo check`).

/// What is wrong with a party's certificate, found by [`inspect_pem_files`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// The certificate does not chain to any certificate of the CA file.
    #[error("{} is not signed by the CA in {} ({reason}); use the CA file the parties agreed on, or a certificate it issued", .cert.display(), .ca.display())]
    NotSignedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// What WebPKI said.
        reason: String,
    },
    /// The certificate is not valid at the time of the check.
    #[error("{} has expired: it was valid until {} (UTC); renew it", .cert.display(), date(*.not_after))]
    Expired {
        /// The certificate file.
        cert: PathBuf,
        /// Its notAfter time.
        not_after: SystemTime,
    },
    /// The certificate is not valid yet.
    #[error("{} is not valid yet: it becomes valid on {} (UTC); check this machine's clock or the certificate", .cert.display(), date(*.not_before))]
    NotYetValid {
        /// The certificate file.
        cert: PathBuf,
        /// Its notBefore time.
        not_before: SystemTime,
    },
    /// The certificate does not name the party but names another party of
    /// the job (a certificate naming no party of the job is a shared one,
    /// [`IdentityMode::Shared`], not a problem).
    #[error("{} names {presented:?}, not party '{party}': it needs the subjectAltName DNS:{party}; use the certificate issued for '{party}'", .cert.display())]
    WrongName {
        /// The certificate file.
        cert: PathBuf,
        /// The party it should name.
        party: PartyName,
        /// The names it presents.
        presented: Vec<String>,
    },
    /// The certificate cannot be used both to accept (server) and to dial
    /// (client), as every party does.
    #[error("{} cannot serve as both a server and a client certificate ({reason}); issue it with no extended key usage, or with both serverAuth and clientAuth", .cert.display())]
    Usage {
        /// The certificate file.
        cert: PathBuf,
        /// What WebPKI said.
        reason: String,
    },
    /// The certificate is a CA certificate (basicConstraints `CA:TRUE`,
    /// what `openssl req -x509` makes by default): WebPKI refuses it as a
    /// peer's own certificate at every party, even as its own CA.
    #[error("{} is a CA certificate (basicConstraints CA:TRUE), which TLS refuses as a party's own certificate (WebPKI: CaUsedAsEndEntity), even when it is also the CA; issue it with CA:FALSE or without basicConstraints (RayFed's generate_tls_certs.py adds none; `openssl req -x509` adds CA:TRUE unless given -addext basicConstraints=critical,CA:FALSE)", .cert.display())]
    CaCertificate {
        /// The certificate file.
        cert: PathBuf,
    },
    /// The certificate cannot be parsed as an X.509 end-entity certificate.
    #[error("{} holds no usable X.509 certificate: {reason}", .cert.display())]
    Unparsable {
        /// The certificate file.
        cert: PathBuf,
        /// What WebPKI said.
        reason: String,
    },
}

/// The validity period of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

/// What [`inspect_pem_files`] found. A field is `None` when what it checks
/// could not be looked at because an earlier file did not load.
#[derive(Debug)]
#[non_exhaustive]
pub struct IdentityReport {
    /// The CA file: the number of CA certificates, each usable as a trust
    /// anchor.
    pub ca: Result<usize, SetupError>,
    /// The certificate file: the number of certificates in the chain.
    pub cert: Result<usize, SetupError>,
    /// The key file: it parses and belongs to the certificate.
    pub key: Option<Result<(), SetupError>>,
    /// The leaf's validity period, and whether it holds now.
    pub validity: Option<Result<Validity, CertificateProblem>>,
    /// The leaf chains to the CA, for server and for client use.
    pub chain: Option<Result<(), CertificateProblem>>,
    /// The leaf names the party ([`IdentityMode::Bound`]), or no party of
    /// the job ([`IdentityMode::Shared`]: party names are then not bound to
    /// certificates), or another party of the job (the error).
    pub name: Option<Result<IdentityMode, CertificateProblem>>,
    /// The DNS names the leaf presents (`DNS:alice`), empty if it could not
    /// be read.
    pub presented: Vec<String>,
}

fn unix(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// `YYYY-MM-DD HH:MM:SS`, UTC, for messages.
pub(crate) fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Checks a party's TLS files the way the transport will use them, each
/// problem on its own: the CA file parses into trust anchors; the certificate
/// file parses; the key parses and belongs to the certificate; the leaf is
/// valid at `now`; it chains to the CA for both server and client use
/// (checked at a time within its validity, so that an expired certificate
/// is reported as expired, not as unsigned); it names `party`, or no party
/// of `parties` (the job's parties; a shared certificate), and not another
/// party of `parties`.
pub fn inspect_pem_files(
    ca: &Path,
    cert: &Path,
    key: &Path,
    party: &PartyName,
    parties: &[PartyName],
    now: SystemTime,
) -> IdentityReport {
    let ca_certs = read_certs("CA certificate", ca).and_then(|certs| {
        for c in &certs {
            webpki::anchor_from_trusted_cert(c)
                .map_err(|e| pem_err("CA certificate", ca, format!("not a usable CA: {e}")))?;
        }
        Ok(certs)
    });
    let chain = read_certs("certificate chain", cert);
    let mut key_result = None;
    let mut found = Found::default();
    if let Ok(chain) = &chain {
        key_result = Some(
            PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_err("private key", key, e))
                .and_then(|k| check_key_fits(chain, &k, cert, key)),
        );
        found = inspect_leaf(
            chain,
            ca_certs.as_deref().ok(),
            (cert, ca),
            party,
            parties,
            now,
        );
    }
    IdentityReport {
        ca: ca_certs.map(|c| c.len()),
        cert: chain.map(|c| c.len()),
        key: key_result,
        validity: found.validity,
        chain: found.chain,
        name: found.name,
        presented: found.presented,
    }
}

#[derive(Default)]
struct Found {
    validity: Option<Result<Validity, CertificateProblem>>,
    chain: Option<Result<(), CertificateProblem>>,
    name: Option<Result<IdentityMode, CertificateProblem>>,
    presented: Vec<String>,
}

fn inspect_leaf(
    chain: &[CertificateDer<'static>],
    ca_certs: Option<&[CertificateDer<'static>]>,
    (cert, ca): (&Path, &Path),
    party: &PartyName,
    parties: &[PartyName],
    now: SystemTime,
) -> Found {
    let mut found = Found::default();
    let ee = match webpki::EndEntityCert::try_from(&chain[0]) {
        Ok(ee) => ee,
        Err(e) => {
            found.validity = Some(Err(CertificateProblem::Unparsable {
                cert: cert.to_path_buf(),
                reason: e.to_string(),
            }));
            return found;
        }
    };
    let wrong_name = |presented| CertificateProblem::WrongName {
        cert: cert.to_path_buf(),
        party: party.clone(),
        presented,
    };
    found.presented = presented_names(&chain[0]);
    found.name = Some(match check_mode_in_job(&chain[0], party, parties) {
        Ok(mode) => Ok(mode),
        Err(_) => Err(wrong_name(found.presented.clone())),
    });
    let validity = validity_of(&ee);
    found.validity = Some(if now < validity.not_before {
        Err(CertificateProblem::NotYetValid {
            cert: cert.to_path_buf(),
            not_before: validity.not_before,
        })
    } else if now > validity.not_after {
        Err(CertificateProblem::Expired {
            cert: cert.to_path_buf(),
            not_after: validity.not_after,
        })
    } else {
        Ok(validity)
    });
    if let Some(ca_certs) = ca_certs {
        // Within the validity period, so that only the chain is judged here.
        let at = match &found.validity {
            Some(Ok(_)) => now,
            _ => {
                validity.not_before
                    + validity
                        .not_after
                        .duration_since(validity.not_before)
                        .unwrap_or_default()
                        / 2
            }
        };
        found.chain = Some(verify_chain(&ee, &chain[1..], ca_certs, at, cert, ca));
    }
    found
}

/// WebPKI lists presented names as `DnsName("alice")`; say `DNS:alice`.
pub(crate) fn tidy_names(presented: &[String]) -> Vec<String> {
    presented
        .iter()
        .map(|n| {
            match n
                .strip_prefix("DnsName(\"")
                .and_then(|n| n.strip_suffix("\")"))
            {
                Some(dns) => format!("DNS:{dns}"),
                None => n.clone(),
            }
        })
        .collect()
}

/// The validity period, read from WebPKI's answers at the earliest and the
/// latest representable times (webpki checks the dates before anything
/// else and reports the bound it found).
fn validity_of(ee: &webpki::EndEntityCert<'_>) -> Validity {
    let probe = |t: u64| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[],
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(t)),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .err()
    };
    let not_before = match probe(0) {
        Some(webpki::Error::CertNotValidYet { not_before, .. }) => unix(not_before),
        _ => UNIX_EPOCH,
    };
    // Year 9999: later than any notAfter but the "no expiry" 99991231235959Z.
    let not_after = match probe(253_402_300_799) {
        Some(webpki::Error::CertExpired { not_after, .. }) => unix(not_after),
        _ => UNIX_EPOCH + Duration::from_secs(253_402_300_799),
    };
    Validity {
        not_before,
        not_after,
    }
}

fn verify_chain(
    ee: &webpki::EndEntityCert<'_>,
    intermediates: &[CertificateDer<'static>],
    ca_certs: &[CertificateDer<'static>],
    at: SystemTime,
    cert: &Path,
    ca: &Path,
) -> Result<(), CertificateProblem> {
    let anchors: Vec<_> = ca_certs
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let time = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
    let verify = |usage| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            time,
            usage,
            None,
            None,
        )
        .map(|_| ())
    };
    match verify(webpki::KeyUsage::server_auth()) {
        Ok(()) => {}
        Err(webpki::Error::CaUsedAsEndEntity) => {
            return Err(CertificateProblem::CaCertificate {
                cert: cert.to_path_buf(),
            })
        }
        Err(e @ webpki::Error::RequiredEkuNotFoundContext(_)) => {
            return Err(CertificateProblem::Usage {
                cert: cert.to_path_buf(),
                reason: format!("not for server use: {e}"),
            })
        }
        Err(e) => {
            return Err(CertificateProblem::NotSignedByCa {
                cert: cert.to_path_buf(),
                ca: ca.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    verify(webpki::KeyUsage::client_auth()).map_err(|e| CertificateProblem::Usage {
        cert: cert.to_path_buf(),
        reason: format!("not for client use: {e}"),
    })
}

// ---------------------------------------------------------------------------
// The dialer's view of a server certificate, for probes.

/// A server-certificate verifier that does exactly what the transport's
/// does (for the party's [`IdentityMode`]) and remembers its verdict, so
/// that a probe can say why a handshake failed.
#[derive(Debug)]
pub(crate) struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    verdict: Mutex<Option<rustls::Error>>,
}

impl RecordingVerifier {
    /// The error WebPKI found in the server's certificate, if any.
    pub(crate) fn rejection(&self) -> Option<rustls::Error> {
        self.verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(e) = &result {
            *self
                .verdict
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl TlsIdentity {
    /// A rustls client configuration for `party` (as the transport's, with
    /// ALPN) whose server-certificate verdict can be read afterwards.
    pub(crate) fn recording_client_config(
        &self,
        party: &PartyName,
    ) -> Result<(rustls::ClientConfig, Arc<RecordingVerifier>), SetupError> {
        let tls_err = |reason: String| SetupError::Tls {
            party: party.clone(),
            reason,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = self.server_verifier(party)?;
        let verifier = Arc::new(RecordingVerifier {
            inner,
            verdict: Mutex::new(None),
        });
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err(format!("certificate and key do not fit: {e}")))?;
        client.alpn_protocols = vec![xsilo_wire::alpn()];
        Ok((client, verifier))
    }
}
