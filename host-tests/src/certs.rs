//! A throwaway mesh CA and SPIFFE workload certificates, as Istio issues them:
//! the SPIFFE ID is the certificate's only URI SAN.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files of one workload certificate.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that writes its certificate and the workload certificates it issues
/// into a directory.
pub struct Pki {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish()
    }
}

impl Pki {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "meshguard test mesh CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "cluster.local");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).context("writing ca.pem")?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer,
            ca_file,
        })
    }

    /// The CA certificate every sidecar trusts.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Issues a client+server certificate whose only URI SAN is `spiffe_id`.
    pub fn issue(&self, file_stem: &str, spiffe_id: &str) -> anyhow::Result<CertFiles> {
        self.issue_with_uris(file_stem, &[spiffe_id])
    }

    /// Issues a certificate with these URI SANs, in order (more than one makes
    /// a certificate that is not a valid X509-SVID, for negative tests).
    pub fn issue_with_uris(&self, file_stem: &str, uris: &[&str]) -> anyhow::Result<CertFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = uris
            .iter()
            .map(|uri| Ok(SanType::URI((*uri).try_into()?)))
            .collect::<anyhow::Result<_>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, file_stem);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok(files)
    }
}
