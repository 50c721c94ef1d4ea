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
    /// The certificate, naming the party (`DNS:<party>`).
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
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "xsilo development CA (not for production)",
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate().map_err(gen_err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(gen_err)?;
        Ok(Self { issuer })
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
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, party.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(
            party.as_str().try_into().map_err(gen_err)?,
        )];
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
