//! The keys tokens are checked with: an HS256 secret from the settings, an RSA or EC
//! public key (PEM), and a JWKS file. Files are read at start and again on reload; a
//! reload that fails keeps the keys that worked.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::settings::AuthSettings;

/// A key file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no RSA or EC public key in PEM form")]
    Pem {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("{path} is not a JWKS document")]
    Jwks {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: key {kid:?} cannot be used")]
    Jwk {
        path: PathBuf,
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Every key a token may be signed with, by algorithm and key id.
pub struct Keys {
    hmac: Option<DecodingKey>,
    /// The PEM key and its algorithm (RS256 or ES256).
    public: Option<(Algorithm, DecodingKey)>,
    /// JWKS keys: key id (may be empty) → algorithm and key.
    jwks: Vec<(String, Algorithm, DecodingKey)>,
}

impl Keys {
    pub fn load(settings: &AuthSettings) -> Result<Self, KeyError> {
        let hmac = settings
            .hmac_secret
            .as_deref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let public = settings.public_key_file.as_deref().map(pem).transpose()?;
        let jwks = match settings.jwks_file.as_deref() {
            Some(path) => jwks(path)?,
            None => Vec::new(),
        };
        Ok(Self { hmac, public, jwks })
    }

    /// The algorithms some key here can check.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algs: Vec<Algorithm> = self.hmac.iter().map(|_| Algorithm::HS256).collect();
        algs.extend(self.public.iter().map(|(alg, _)| *alg));
        algs.extend(self.jwks.iter().map(|(_, alg, _)| *alg));
        algs.dedup();
        algs
    }

    /// The key for a token signed with `alg`, named `kid` when the token names one.
    pub fn find(&self, alg: Algorithm, kid: Option<&str>) -> Option<&DecodingKey> {
        if alg == Algorithm::HS256 {
            return self.hmac.as_ref();
        }
        if let Some(kid) = kid
            && let Some((_, _, key)) = self.jwks.iter().find(|(k, a, _)| k == kid && *a == alg)
        {
            return Some(key);
        }
        match &self.public {
            Some((a, key)) if *a == alg => Some(key),
            // A token without a key id is checked with the only JWKS key of its kind.
            _ if kid.is_none() => {
                let mut of_alg = self.jwks.iter().filter(|(_, a, _)| *a == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some((_, _, key)), None) => Some(key),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem(path: &Path) -> Result<(Algorithm, DecodingKey), KeyError> {
    let bytes = read(path)?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&bytes) {
        return Ok((Algorithm::RS256, key));
    }
    DecodingKey::from_ec_pem(&bytes)
        .map(|key| (Algorithm::ES256, key))
        .map_err(|source| KeyError::Pem {
            path: path.to_owned(),
            source,
        })
}

fn jwks(path: &Path) -> Result<Vec<(String, Algorithm, DecodingKey)>, KeyError> {
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|source| KeyError::Jwks {
        path: path.to_owned(),
        source,
    })?;
    set.keys
        .iter()
        .map(|jwk| {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let bad = |source| KeyError::Jwk {
                path: path.to_owned(),
                kid: kid.clone(),
                source,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(bad)?;
            let alg = match key.family() {
                jsonwebtoken::AlgorithmFamily::Ec => Algorithm::ES256,
                _ => Algorithm::RS256,
            };
            Ok((kid, alg, key))
        })
        .collect()
}
