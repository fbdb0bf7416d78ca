//! Encryption at rest of the objects of one resource (Secrets), as kube-apiserver's
//! `--encryption-provider-config` does it: an `EncryptionConfiguration` lists providers,
//! the first encrypts every write, any of them decrypts a read. A stored value starts with
//! `k8s:enc:aesgcm:v1:<key name>:` followed by a random 12-byte nonce and the AES-GCM
//! ciphertext with its tag (the `identity` provider stores plaintext JSON).
//!
//! The transform sits at the persistence boundary only (`persist.rs`): the snapshot,
//! the watch cache and every reader see plaintext objects, the RocksDB files never do.
//! Rotation: put a new key first and restart; at load every object read with another key
//! is written again with the first one (kube-apiserver leaves that to
//! `kubectl get secrets -A -o json | kubectl replace -f -`).

use std::path::Path;

use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// The resource whose objects are encrypted.
pub const ENCRYPTED_RESOURCE: &str = "secrets";
/// The file name of the configuration skiff writes on first start (under `<data_dir>/pki`).
pub const CONFIG_FILE: &str = "encryption-config.yaml";

const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an EncryptionConfiguration: {detail}")]
    Parse { path: String, detail: String },
    #[error("{path}: {detail}")]
    Unsupported { path: String, detail: String },
    #[error("no random numbers from the operating system")]
    Random,
    #[error("writing {path}: {detail}")]
    Write { path: String, detail: String },
    #[error("value is encrypted with key {0:?}, which the encryption configuration does not list")]
    UnknownKey(String),
    #[error("value is not encrypted and the encryption configuration has no identity provider")]
    Plaintext,
    #[error("decryption with key {0:?} failed (wrong key or damaged value)")]
    Decrypt(String),
}

/// One provider of the list, in order.
enum Provider {
    AesGcm(Vec<AesKey>),
    Identity,
}

struct AesKey {
    name: String,
    key: LessSafeKey,
}

/// What the store encrypts and decrypts with.
pub struct Transformer {
    providers: Vec<Provider>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("write_key", &self.write_key_name())
            .finish_non_exhaustive()
    }
}

/// A value read back: the plaintext and whether it should be written again with the
/// current write key.
pub struct Decrypted {
    pub plaintext: Vec<u8>,
    pub stale: bool,
}

// The EncryptionConfiguration as kube-apiserver reads it (apiserver.config.k8s.io/v1).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderConfig {
    aesgcm: Option<KeysConfig>,
    identity: Option<serde_yaml_ng::Value>,
    aescbc: Option<serde_yaml_ng::Value>,
    secretbox: Option<serde_yaml_ng::Value>,
    kms: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

impl Transformer {
    /// Read the configuration at `path`, writing one with a fresh 32-byte key first if
    /// there is none.
    pub fn load_or_create(path: &Path) -> Result<Transformer, EncryptionError> {
        if !path.exists() {
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| EncryptionError::Random)?;
            let text = new_config(&base64::engine::general_purpose::STANDARD.encode(key));
            crate::pki::write_secret(path, &text).map_err(|e| EncryptionError::Write {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            tracing::info!(path = %path.display(), "created the encryption configuration for secrets");
        }
        let text = std::fs::read_to_string(path).map_err(|source| EncryptionError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Transformer::parse(&text, &path.display().to_string())
    }

    /// Parse an EncryptionConfiguration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Transformer, EncryptionError> {
        let unsupported = |detail: String| EncryptionError::Unsupported {
            path: origin.to_string(),
            detail,
        };
        let cfg: ConfigFile =
            serde_yaml_ng::from_str(text).map_err(|e| EncryptionError::Parse {
                path: origin.to_string(),
                detail: e.to_string(),
            })?;
        if cfg.kind != "EncryptionConfiguration" {
            return Err(EncryptionError::Parse {
                path: origin.to_string(),
                detail: format!("kind is {:?}, not EncryptionConfiguration", cfg.kind),
            });
        }
        let mut providers = None;
        for r in cfg.resources {
            for name in &r.resources {
                if name != ENCRYPTED_RESOURCE {
                    return Err(unsupported(format!(
                        "skiff encrypts only secrets, not {name:?}"
                    )));
                }
            }
            if providers.is_some() {
                return Err(unsupported("secrets are listed twice".into()));
            }
            providers = Some(
                r.providers
                    .into_iter()
                    .map(|p| provider(p).map_err(&unsupported))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        let providers = providers.unwrap_or_default();
        if providers.is_empty() {
            return Err(unsupported("no providers for secrets".into()));
        }
        Ok(Transformer {
            providers,
            rng: SystemRandom::new(),
        })
    }

    /// The name of the key writes use; `None` when the first provider is `identity`.
    pub fn write_key_name(&self) -> Option<&str> {
        match self.providers.first() {
            Some(Provider::AesGcm(keys)) => keys.first().map(|k| k.name.as_str()),
            _ => None,
        }
    }

    /// Whether values under `key` (a store key, `<resource>/<ns>/<name>`) are encrypted.
    pub fn applies_to(key: &str) -> bool {
        key.strip_prefix(ENCRYPTED_RESOURCE)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// `plaintext` as the first provider stores it.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let Some(Provider::AesGcm(keys)) = self.providers.first() else {
            return Ok(plaintext.to_vec());
        };
        let Some(k) = keys.first() else {
            return Ok(plaintext.to_vec());
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| EncryptionError::Random)?;
        let mut sealed = plaintext.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| EncryptionError::Random)?;
        let mut out =
            Vec::with_capacity(AESGCM_PREFIX.len() + k.name.len() + 1 + 12 + sealed.len());
        out.extend_from_slice(AESGCM_PREFIX.as_bytes());
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// A stored value back in plaintext, by whichever provider wrote it.
    pub fn decrypt(&self, stored: &[u8]) -> Result<Decrypted, EncryptionError> {
        let Some(rest) = stored.strip_prefix(AESGCM_PREFIX.as_bytes()) else {
            if !self
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity))
            {
                return Err(EncryptionError::Plaintext);
            }
            return Ok(Decrypted {
                plaintext: stored.to_vec(),
                stale: self.write_key_name().is_some(),
            });
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| EncryptionError::UnknownKey(String::new()))?;
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let body = &rest[colon + 1..];
        let key = self
            .providers
            .iter()
            .filter_map(|p| match p {
                Provider::AesGcm(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|k| k.name == name)
            .ok_or_else(|| EncryptionError::UnknownKey(name.clone()))?;
        let (nonce, sealed) = body
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| EncryptionError::Decrypt(name.clone()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| EncryptionError::Decrypt(name.clone()))?;
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| EncryptionError::Decrypt(name.clone()))?;
        let plaintext = plain.to_vec();
        Ok(Decrypted {
            plaintext,
            stale: self.write_key_name() != Some(name.as_str()),
        })
    }
}

fn provider(p: ProviderConfig) -> Result<Provider, String> {
    for (name, set) in [
        ("aescbc", p.aescbc.is_some()),
        ("secretbox", p.secretbox.is_some()),
        ("kms", p.kms.is_some()),
    ] {
        if set {
            return Err(format!(
                "provider {name} is not supported; use aesgcm or identity"
            ));
        }
    }
    match (p.aesgcm, p.identity) {
        (Some(cfg), None) => {
            if cfg.keys.is_empty() {
                return Err("aesgcm needs at least one key".into());
            }
            let mut keys = Vec::with_capacity(cfg.keys.len());
            for k in cfg.keys {
                if k.name.is_empty() || k.name.contains(':') {
                    return Err(format!(
                        "key name {:?} must be non-empty and without ':'",
                        k.name
                    ));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k.secret.trim())
                    .map_err(|e| format!("key {:?}: secret is not base64: {e}", k.name))?;
                let alg = match bytes.len() {
                    16 => &aead::AES_128_GCM,
                    32 => &aead::AES_256_GCM,
                    n => {
                        return Err(format!(
                            "key {:?}: an aesgcm key must be 16 or 32 bytes, not {n}",
                            k.name
                        ))
                    }
                };
                let unbound = UnboundKey::new(alg, &bytes)
                    .map_err(|_| format!("key {:?} is not a valid AES key", k.name))?;
                keys.push(AesKey {
                    name: k.name,
                    key: LessSafeKey::new(unbound),
                });
            }
            Ok(Provider::AesGcm(keys))
        }
        (None, Some(_)) => Ok(Provider::Identity),
        _ => Err("each provider must be exactly one of aesgcm or identity".into()),
    }
}

/// The configuration written on first start: one AES-256-GCM key.
fn new_config(secret_b64: &str) -> String {
    format!(
        "# Encryption at rest of Secrets, in kube-apiserver's EncryptionConfiguration format.\n\
         # The first key encrypts every write; every key listed decrypts. To rotate: add a\n\
         # new key first, restart (skiff rewrites every secret with it), then remove the old.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         \x20 - resources:\n\
         \x20     - secrets\n\
         \x20   providers:\n\
         \x20     - aesgcm:\n\
         \x20         keys:\n\
         \x20           - name: key1\n\
         \x20             secret: {secret_b64}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI="; // 32 bytes
    const KEY2: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNkZWY="; // 32 bytes

    fn config(keys: &[(&str, &str)], identity: bool) -> String {
        let mut s = String::from(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n",
        );
        for (name, secret) in keys {
            s.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
        }
        if identity {
            s.push_str("  - identity: {}\n");
        }
        s
    }

    #[test]
    fn a_value_is_stored_with_kubernetes_prefix_and_reads_back() {
        let t = Transformer::parse(&config(&[("key1", KEY1)], false), "t").expect("parses");
        let sealed = t.encrypt(br#"{"data":{"a":"c2VjcmV0"}}"#).expect("seals");
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(6).any(|w| w == b"c2VjcmV0"));
        let back = t.decrypt(&sealed).expect("opens");
        assert_eq!(back.plaintext, br#"{"data":{"a":"c2VjcmV0"}}"#);
        assert!(!back.stale);
        // Each write gets its own nonce.
        assert_ne!(
            sealed,
            t.encrypt(br#"{"data":{"a":"c2VjcmV0"}}"#).expect("seals")
        );
    }

    #[test]
    fn a_second_key_reads_old_values_and_marks_them_for_rewriting() {
        let old = Transformer::parse(&config(&[("key1", KEY1)], false), "t").expect("parses");
        let sealed = old.encrypt(b"x").expect("seals");
        let rotated = Transformer::parse(&config(&[("key2", KEY2), ("key1", KEY1)], false), "t")
            .expect("parses");
        let back = rotated.decrypt(&sealed).expect("opens with the second key");
        assert_eq!(back.plaintext, b"x");
        assert!(back.stale);
        assert!(rotated
            .encrypt(b"x")
            .expect("seals")
            .starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        let forgot = Transformer::parse(&config(&[("key2", KEY2)], false), "t").expect("parses");
        assert!(matches!(
            forgot.decrypt(&sealed),
            Err(EncryptionError::UnknownKey(k)) if k == "key1"
        ));
    }

    #[test]
    fn tampering_or_plaintext_is_refused_unless_identity_is_listed() {
        let t = Transformer::parse(&config(&[("key1", KEY1)], false), "t").expect("parses");
        let mut sealed = t.encrypt(b"hello").expect("seals");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            t.decrypt(&sealed),
            Err(EncryptionError::Decrypt(_))
        ));
        assert!(matches!(t.decrypt(b"{}"), Err(EncryptionError::Plaintext)));
        let with_identity =
            Transformer::parse(&config(&[("key1", KEY1)], true), "t").expect("parses");
        let plain = with_identity.decrypt(b"{}").expect("identity reads");
        assert_eq!(plain.plaintext, b"{}");
        assert!(plain.stale);
    }

    #[test]
    fn unsupported_configurations_are_refused_with_a_reason() {
        let other = config(&[("key1", KEY1)], false).replace("[secrets]", "[configmaps]");
        assert!(Transformer::parse(&other, "t")
            .expect_err("refused")
            .to_string()
            .contains("only secrets"));
        let short = config(&[("key1", "c2hvcnQ=")], false);
        assert!(Transformer::parse(&short, "t")
            .expect_err("refused")
            .to_string()
            .contains("16 or 32 bytes"));
        let cbc = "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc: {keys: []}\n";
        assert!(Transformer::parse(cbc, "t")
            .expect_err("refused")
            .to_string()
            .contains("aescbc is not supported"));
    }

    #[test]
    fn the_first_start_writes_a_private_configuration_that_parses() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pki").join(CONFIG_FILE);
        let t = Transformer::load_or_create(&path).expect("created");
        assert_eq!(t.write_key_name(), Some("key1"));
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Transformer::load_or_create(&path).expect("loaded");
        let sealed = t.encrypt(b"v").expect("seals");
        assert_eq!(again.decrypt(&sealed).expect("same key").plaintext, b"v");
    }

    #[test]
    fn only_the_secrets_resource_is_encrypted() {
        assert!(Transformer::applies_to("secrets/default/s"));
        assert!(!Transformer::applies_to("secretsx/default/s"));
        assert!(!Transformer::applies_to("configmaps/default/c"));
    }
}
