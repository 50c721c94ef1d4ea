//! Development certificates, generated in memory (rcgen).
//!
//! **For development and tests only.** The CA's private key lives in the
//! process that made it; anyone holding it can mint any party's identity.
//! Production deployments use certificates from the organisations' own PKI,
//! each naming its party as a DNS `subjectAltName`.
//!
//! ```
//! use xsilo_transport::devcert::DevCa;
//! let ca = DevCa::new().unwrap();
//! let alice = ca.issue(&"alice".parse().unwrap()).unwrap();
//! assert!(alice.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! let identity = ca.identity(&"alice".parse().unwrap()).unwrap();
//! assert!(identity.names(&"alice".parse().unwrap()));
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use xsilo_wire::PartyName;

use crate::error::SetupError;
use crate::tls::TlsIdentity;

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a development certificate: {0}")]
pub struct DevCertError(String);

fn gen_err(e: impl ToString) -> DevCertError {
    DevCertError(e.to_string())
}

/// A party's development certificate and key, as PEM.
#[derive(Debug, Clone)]
pub struct DevCert {
    /// The certificate, naming the party (`DNS:<party>`), or the names a
    /// shared certificate was made for.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A development certificate authority.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa { .. }")
    }
}

impl DevCa {
    /// A fresh CA, valid from yesterday for ten years.
    pub fn new() -> Result<Self, DevCertError> {
        let now = OffsetDateTime::now_utc();
        Self::self_signed(
            "xsilo development CA (not for production)",
            KeyPair::generate().map_err(gen_err)?,
            now - Duration::days(1),
            now + Duration::days(3650),
        )
    }

    /// A self-signed CA certificate named `name` for `key`.
    fn self_signed(
        name: &str,
        key: KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, DevCertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before;
        params.not_after = not_after;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err)?;
        Ok(Self { issuer })
    }

    /// A CA whose key is derived from `secret` (SHA-256, as an Ed25519
    /// key) and whose name and validity are fixed: processes that know the
    /// same secret make the same CA, so each can issue its own party's
    /// certificate and trust the others'. For a development job started as
    /// separate processes with nothing prepared (the Python package uses the
    /// job's name when no `tls_config` is given). Anyone who knows the
    /// secret can join as any party: never for production.
    ///
    /// ```
    /// use xsilo_transport::devcert::DevCa;
    /// let a = DevCa::from_secret(b"job demo").unwrap();
    /// let b = DevCa::from_secret(b"job demo").unwrap();
    /// assert_eq!(a.public_key_der(), b.public_key_der());
    /// assert_ne!(a.public_key_der(), DevCa::from_secret(b"job other").unwrap().public_key_der());
    /// ```
    pub fn from_secret(secret: &[u8]) -> Result<Self, DevCertError> {
        use sha2::Digest;
        let seed = sha2::Sha256::new()
            .chain_update(b"xsilo development CA from a shared secret, v1\0")
            .chain_update(secret)
            .finalize();
        // PKCS#8 v1 of an Ed25519 key: the fixed prefix, then the seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let key = KeyPair::try_from(pkcs8.as_slice()).map_err(gen_err)?;
        Self::self_signed(
            "xsilo development CA from a shared secret (not for production)",
            key,
            OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 50),
            OffsetDateTime::UNIX_EPOCH + Duration::days(365 * 130),
        )
    }

    /// The CA's public key (DER, SubjectPublicKeyInfo contents).
    pub fn public_key_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::der_bytes(self.issuer.key()).to_vec()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a certificate naming `party`, valid from yesterday for a year.
    pub fn issue(&self, party: &PartyName) -> Result<DevCert, DevCertError> {
        let now = OffsetDateTime::now_utc();
        self.issue_valid(party, now - Duration::days(1), now + Duration::days(365))
    }

    /// Issues a certificate naming `party` with the given validity (tests use
    /// it for expired certificates).
    pub fn issue_valid(
        &self,
        party: &PartyName,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<DevCert, DevCertError> {
        self.issue_names(party.as_str(), &[party.as_str()], not_before, not_after)
    }

    /// Issues a certificate with common name `common_name` and the DNS
    /// `subjectAltName`s `names` (none of them need be a party: a
    /// certificate naming no party of a job is shared, see
    /// [`crate::IdentityMode::Shared`]), for server and client use.
    pub fn issue_names(
        &self,
        common_name: &str,
        names: &[&str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<DevCert, DevCertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = dns_names(names)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(DevCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `party` and returns it as a [`TlsIdentity`]
    /// trusting this CA.
    pub fn identity(&self, party: &PartyName) -> Result<TlsIdentity, SetupError> {
        let cert = self.issue(party).map_err(|e| SetupError::Tls {
            party: party.clone(),
            reason: e.to_string(),
        })?;
        TlsIdentity::from_pem(&self.ca_pem(), &cert.cert_pem, &cert.key_pem)
    }
}

fn dns_names(names: &[&str]) -> Result<Vec<SanType>, DevCertError> {
    names
        .iter()
        .map(|n| Ok(SanType::DnsName((*n).try_into().map_err(gen_err)?)))
        .collect()
}

/// A self-signed certificate of the shape RayFed's certificate tool
/// (`tool/generate_tls_certs.py`) makes, for tests of shared certificates:
/// subject and issuer `CN=<common_name>`, the DNS `subjectAltName`s `names`
/// (RayFed's are the host's address, `127.0.0.1` written as a DNS name, and
/// `localhost`), and no other extension (no basicConstraints, no key usage,
/// no extended key usage). Valid from yesterday for a year. Every party
/// uses it as its certificate and as its CA file: it names no party, so
/// each party runs in [`crate::IdentityMode::Shared`]. RayFed's key is
/// RSA 2048; this one is ECDSA P-256 (ring cannot generate RSA keys).
///
/// ```
/// use xsilo_transport::devcert::self_signed_shared;
/// use xsilo_transport::{IdentityMode, TlsIdentity};
/// let shared = self_signed_shared("ray-internal", &["127.0.0.1", "localhost"]).unwrap();
/// let identity = TlsIdentity::from_pem(&shared.cert_pem, &shared.cert_pem, &shared.key_pem).unwrap();
/// assert_eq!(identity.mode(&"alice".parse().unwrap()), IdentityMode::Shared);
/// ```
pub fn self_signed_shared(common_name: &str, names: &[&str]) -> Result<DevCert, DevCertError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = dns_names(names)?;
    params.is_ca = IsCa::NoCa;
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365);
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(DevCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
