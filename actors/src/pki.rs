//! The cluster's public-key infrastructure: a CA created at first start (kubeadm's
//! `ca.crt`/`ca.key`), the API server's serving certificate, client certificates signed for
//! users and nodes (CN = user, O = groups), and the random tokens the cluster hands out.
//!
//! Everything lives in `<data_dir>/pki/`; keys are written with mode 0600, and a restart
//! reuses what is there so kubeconfigs and node credentials stay valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The file names under `<data_dir>/pki/`.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";
pub const TOKEN_FILE: &str = "tokens.csv";
pub const JOIN_TOKEN: &str = "join-token";

/// How long the CA is valid (kubeadm: ten years).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the serving certificate is valid (kubeadm: one year); renewed at start when
/// less than `RENEW_BEFORE` is left.
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start being valid a little before now, for clocks slightly behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    BadFile { path: PathBuf, detail: String },
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    #[error("no random numbers from the system")]
    Random,
}

/// A key and the certificate for it, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The subject and usages a certificate or signing request names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
}

/// The cluster certificate authority: signs the serving certificate and every client
/// certificate the API server accepts.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new self-signed CA named `common_name`, in memory.
    pub fn generate(common_name: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::Generate)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::Generate)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// The CA in `dir` (`ca.crt`, `ca.key`), created there on first use.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, PkiError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if cert_path.exists() || key_path.exists() {
            let cert = read(&cert_path)?;
            let key = read(&key_path)?;
            return ClusterCa::from_pem(&cert, &key).map_err(|e| PkiError::BadFile {
                path: cert_path,
                detail: e.to_string(),
            });
        }
        let ca = ClusterCa::generate("skiff-ca")?;
        write_public(&cert_path, &ca.cert_pem)?;
        write_secret(&key_path, &ca.issuer.key().serialize_pem())?;
        tracing::info!(path = %cert_path.display(), "created the cluster CA");
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's pin in kubeadm's `--discovery-token-ca-cert-hash` form.
    pub fn cert_hash(&self) -> Result<String, PkiError> {
        cert_hash(self.cert_der())
    }

    /// A serving certificate for these names and IP addresses.
    pub fn issue_serving(&self, sans: &[String]) -> Result<Credential, PkiError> {
        let mut params = CertificateParams::new(sans.to_vec()).map_err(PkiError::Generate)?;
        params.distinguished_name = dn("kube-apiserver", &[]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        self.issue(params, now - BACKDATE, now + SERVING_VALIDITY)
    }

    /// A client certificate for user `common_name` in group `organization` (if any),
    /// valid over the given period. One group at most: rcgen keeps one value per subject
    /// attribute, and a silently dropped group would be worse than a refusal.
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Credential, PkiError> {
        if organizations.len() > 1 {
            return Err(PkiError::BadCertificate(
                "at most one organization (group) per issued certificate".into(),
            ));
        }
        let params = client_params(common_name, organizations);
        self.issue(params, not_before, not_after)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Credential, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Sign a certificate signing request (PEM) as a serving certificate valid for
    /// `validity` from now, for the subject and names it asks for (the approver has judged
    /// them); server authentication only, never a CA.
    pub fn sign_serving_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, PkiError> {
        let requested = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = requested.params.distinguished_name.clone();
        params.subject_alt_names = requested.params.subject_alt_names.clone();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_request(params, requested.public_key, validity)
    }

    /// Sign a certificate signing request (PEM) as a client certificate valid for
    /// `validity` from now. Only the request's subject and key are taken from it: the
    /// usages are client authentication whatever it asked for, and it is never a CA.
    pub fn sign_client_csr(&self, csr_pem: &str, validity: Duration) -> Result<String, PkiError> {
        let requested = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = requested.params.distinguished_name.clone();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_request(params, requested.public_key, validity)
    }

    fn sign_request(
        &self,
        mut params: CertificateParams,
        public_key: rcgen::PublicKey,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + validity).into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let to_sign = CertificateSigningRequestParams { params, public_key };
        let cert = to_sign
            .signed_by(&self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(cert.pem())
    }
}

/// The serving certificate in `dir`, reused when it is signed by `ca`, covers every name
/// in `sans` and is not about to expire; issued (again) otherwise.
pub fn load_or_issue_serving(
    dir: &Path,
    ca: &ClusterCa,
    sans: &[String],
) -> Result<Credential, PkiError> {
    let (cert_path, key_path) = (dir.join(SERVING_CERT), dir.join(SERVING_KEY));
    if cert_path.exists() && key_path.exists() {
        let cred = Credential {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
        };
        match serving_still_good(&cred.cert_pem, ca, sans) {
            Ok(true) => return Ok(cred),
            Ok(false) => tracing::info!("serving certificate out of date; issuing a new one"),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable serving certificate; issuing a new one")
            }
        }
    }
    let cred = ca.issue_serving(sans)?;
    write_public(&cert_path, &cred.cert_pem)?;
    write_secret(&key_path, &cred.key_pem)?;
    Ok(cred)
}

/// When the (first) certificate in `cert_pem` stops being valid.
pub fn cert_not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    cert_validity(cert_pem).map(|(_, not_after)| not_after)
}

/// When the (first) certificate in `cert_pem` starts and stops being valid.
pub fn cert_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok((
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    ))
}

/// When to request the next certificate: at a random point between 70% and 90% of this
/// one's lifetime (client-go's certificate manager), so that nodes started together do
/// not all renew at once; `jitter` in [0, 1).
pub fn rotation_deadline(cert_pem: &str, jitter: f64) -> Option<std::time::SystemTime> {
    let (not_before, not_after) = cert_validity(cert_pem).ok()?;
    let lifetime = not_after.duration_since(not_before).ok()?;
    Some(not_before + lifetime.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0)))
}

fn serving_still_good(cert_pem: &str, ca: &ClusterCa, sans: &[String]) -> Result<bool, PkiError> {
    serving_cert_fits(cert_pem, ca.cert_der(), sans, RENEW_BEFORE)
}

/// Whether a serving certificate (PEM) is signed by the CA (DER), covers every name in
/// `sans`, and stays valid for at least `margin` more.
pub fn serving_cert_fits(
    cert_pem: &str,
    ca_der: &[u8],
    sans: &[String],
    margin: Duration,
) -> Result<bool, PkiError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let (_, ca_cert) =
        X509Certificate::from_der(ca_der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
        return Ok(false);
    }
    let renew_at = SystemTime::now() + margin;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    if not_after < renew_at {
        return Ok(false);
    }
    let mut have: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => have.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from_bytes(b) {
                        have.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(sans.iter().all(|s| have.contains(&normalise_san(s))))
}

fn normalise_san(s: &str) -> String {
    s.parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| s.to_string())
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A new key and a certificate signing request for node `node_name`, as a kubelet makes
/// them for the `kubernetes.io/kube-apiserver-client-kubelet` signer: CN
/// `system:node:<name>`, O `system:nodes`, client authentication. Returns (key PEM,
/// CSR PEM).
pub fn node_csr(node_name: &str) -> Result<(String, String), PkiError> {
    client_csr(&format!("system:node:{node_name}"), Some("system:nodes"))
}

/// A new key and a certificate signing request for a client certificate naming user
/// `common_name` in group `organization`. Returns (key PEM, CSR PEM).
pub fn client_csr(
    common_name: &str,
    organization: Option<&str>,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let orgs: Vec<&str> = organization.into_iter().collect();
    let params = client_params(common_name, &orgs);
    let csr = params.serialize_request(&key).map_err(PkiError::Generate)?;
    let pem = csr.pem().map_err(PkiError::Generate)?;
    Ok((key.serialize_pem(), pem))
}

/// A new key and a certificate signing request for node `node_name`'s serving
/// certificate, as a kubelet makes them for the `kubernetes.io/kubelet-serving` signer:
/// CN `system:node:<name>`, O `system:nodes`, server authentication, for `sans` (DNS
/// names and IP addresses). Returns (key PEM, CSR PEM).
pub fn node_serving_csr(node_name: &str, sans: &[String]) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(PkiError::Generate)?;
    params.distinguished_name = dn(&format!("system:node:{node_name}"), &["system:nodes"]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).map_err(PkiError::Generate)?;
    let pem = csr.pem().map_err(PkiError::Generate)?;
    Ok((key.serialize_pem(), pem))
}

/// The DNS names and IP addresses a certificate signing request (PEM) asks for.
pub fn csr_sans(csr_pem: &str) -> Result<Vec<String>, PkiError> {
    let requested = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    Ok(requested
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            SanType::DnsName(d) => Some(d.as_str().to_string()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect())
}

/// What a certificate signing request (PEM) asks for: its subject, and whether its
/// signature proves it was made with the key it names.
pub fn csr_subject(csr_pem: &str) -> Result<Subject, PkiError> {
    use x509_parser::certification_request::X509CertificationRequest;
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| PkiError::BadCsr(format!("bad signature: {e}")))?;
    Ok(subject_of(&csr.certification_request_info.subject))
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo, kubeadm's CA pin: a node
/// that knows it can trust the CA a server presents without a copy of its file.
pub fn cert_hash(der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// A DER certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The subject of a DER certificate.
pub fn cert_subject(der: &[u8]) -> Result<Subject, PkiError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(subject_of(cert.subject()))
}

fn subject_of(name: &x509_parser::x509::X509Name<'_>) -> Subject {
    Subject {
        common_name: name
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .next()
            .unwrap_or_default()
            .to_string(),
        organizations: name
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
    }
}

fn client_params(common_name: &str, organizations: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name, organizations);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn dn(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The SANs a serving certificate needs: loopback names, the listen IP and any extras.
pub fn serving_sans(listen_ip: Option<IpAddr>, extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(ip) = listen_ip.filter(|ip| !ip.is_unspecified()) {
        sans.push(ip.to_string());
    }
    sans.extend(extra.iter().cloned());
    let mut seen = Vec::new();
    sans.retain(|s| {
        let n = normalise_san(s);
        let fresh = !seen.contains(&n);
        seen.push(n);
        fresh
    });
    sans
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = random_bytes::<16>()?;
    // A positive serial that DER encodes in 16 bytes.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| PkiError::Random)?;
    Ok(out)
}

/// `len` random characters from `[a-z0-9]`, the alphabet of bootstrap tokens.
pub fn random_token(len: usize) -> Result<String, PkiError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>()? {
            // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
            if b < 252 && out.len() < len {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// A new join token in kubeadm's bootstrap-token shape: `<6 chars>.<16 chars>`.
pub fn new_join_token() -> Result<String, PkiError> {
    Ok(format!("{}.{}", random_token(6)?, random_token(16)?))
}

pub fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Write a file only its owner may read (keys, tokens, kubeconfigs with credentials).
pub fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    // Write beside and rename, so a crash never leaves half a key behind.
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    // The mode given to open applies only to a new file.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ClusterCa::load_or_create(dir.path()).expect("create");
        let again = ClusterCa::load_or_create(dir.path()).expect("load");
        assert_eq!(first.cert_pem(), again.cert_pem());
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn serving_cert_is_reissued_when_a_name_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::generate("test-ca").expect("ca");
        let sans = serving_sans(Some("127.0.0.1".parse().expect("ip")), &[]);
        let first = load_or_issue_serving(dir.path(), &ca, &sans).expect("issue");
        let same = load_or_issue_serving(dir.path(), &ca, &sans).expect("reuse");
        assert_eq!(first, same);
        let more = serving_sans(None, &["skiff.example".into()]);
        let other = load_or_issue_serving(dir.path(), &ca, &more).expect("reissue");
        assert_ne!(first.cert_pem, other.cert_pem);
        // A certificate from another CA is not reused either.
        let foreign = ClusterCa::generate("other").expect("ca");
        let theirs = load_or_issue_serving(dir.path(), &foreign, &more).expect("reissue");
        assert_ne!(other.cert_pem, theirs.cert_pem);
    }

    #[test]
    fn signed_node_csr_keeps_the_subject_and_only_client_usage() {
        let ca = ClusterCa::generate("test-ca").expect("ca");
        let (_key, csr) = node_csr("n1").expect("csr");
        let subject = csr_subject(&csr).expect("subject");
        assert_eq!(subject.common_name, "system:node:n1");
        assert_eq!(subject.organizations, vec!["system:nodes".to_string()]);
        let pem = ca
            .sign_client_csr(&csr, Duration::from_secs(3600))
            .expect("sign");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        let (_, cert) = X509Certificate::from_der(&der).expect("der");
        assert_eq!(cert_subject(&der).expect("subject"), subject);
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("present")
            .value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
    }

    #[test]
    fn the_ca_pin_is_stable_and_distinguishes_cas() {
        let ca = ClusterCa::generate("a").expect("ca");
        let pin = ca.cert_hash().expect("hash");
        assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
        assert_eq!(pin, cert_hash(ca.cert_der()).expect("hash"));
        let other = ClusterCa::generate("a").expect("ca");
        assert_ne!(pin, other.cert_hash().expect("hash"));
        let pem = der_to_pem(ca.cert_der());
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        assert_eq!(back.as_ref(), ca.cert_der().as_ref());
    }

    #[test]
    fn garbage_is_not_a_csr() {
        let ca = ClusterCa::generate("test-ca").expect("ca");
        assert!(matches!(
            ca.sign_client_csr("not a csr", Duration::from_secs(1)),
            Err(PkiError::BadCsr(_))
        ));
        assert!(csr_subject(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
        .is_err());
    }

    #[test]
    fn join_tokens_have_the_bootstrap_token_shape() {
        let t = new_join_token().expect("token");
        let (id, secret) = t.split_once('.').expect("dot");
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(t
            .chars()
            .all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(t, new_join_token().expect("token"));
    }
}
