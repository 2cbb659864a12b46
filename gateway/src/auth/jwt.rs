//! JWT verification for `user` connections (the `jsonwebtoken` crate, pure-Rust backend).
//!
//! Accepted: HS256 with `[auth] jwt_hs256_secret`, and the one public-key algorithm of
//! `[auth] jwt_public_key_pem_file` (`jwt_public_key_algorithm`: `EdDSA` or `RS256`). A token's
//! header `alg` picks the key; any other `alg` (`none`, HS384, RS256 without a PEM …) is refused,
//! and an HS256 token is only ever checked against the HMAC secret, never against the public
//! key's bytes (the classic algorithm-confusion attack, RFC 8725 §2.1 and §3.1). Claims: `sub`
//! (the user id, 1..=64 bytes, like every id) and `exp` are required; `aud` / `iss` are required
//! and checked when `jwt_audience` / `jwt_issuer` are set; `nbf` is checked when present.
//! `exp` and `nbf` get `jwt_leeway_ms` of clock-skew leeway (whole seconds: JWT times are
//! seconds, RFC 7519 §2 "NumericDate").

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{AuthConfig, ConfigError};

/// Longest JWT accepted, in bytes (a real one is a few hundred; the bound keeps decoding cheap).
pub const JWT_BYTES_MAX: usize = 8 * 1024;

/// What a verified JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// `sub`: the user id this connection acts as.
    pub sub: Arc<str>,
    /// `exp` plus the leeway, in ms since the Unix epoch: after it the connection is closed.
    pub expires_at_ms: u64,
}

/// Why a JWT was refused (answered as `unauthorized`; the message names the reason, never the
/// token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwtError(pub String);

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// The configured JWT keys and checks.
pub struct JwtVerifier {
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    leeway_ms: u64,
}

impl JwtVerifier {
    /// From `[auth]`; `None` when no JWT key is configured (user connections are then refused).
    ///
    /// # Errors
    /// The PEM file cannot be read or holds no key of `jwt_public_key_algorithm`; an unknown
    /// algorithm name; an HS256 secret shorter than 32 bytes (RFC 7518 §3.2: the key must be at
    /// least as long as the hash output).
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Self>, ConfigError> {
        let mut keys = Vec::new();
        if !cfg.jwt_hs256_secret.is_empty() {
            if cfg.jwt_hs256_secret.len() < 32 {
                return Err(ConfigError("auth.jwt_hs256_secret must be at least 32 bytes".into()));
            }
            let key = DecodingKey::from_secret(cfg.jwt_hs256_secret.as_bytes())
                .map_err(|e| ConfigError(format!("auth.jwt_hs256_secret: {e}")))?;
            keys.push((Algorithm::HS256, key));
        }
        if !cfg.jwt_public_key_pem_file.is_empty() {
            let path = &cfg.jwt_public_key_pem_file;
            let pem =
                std::fs::read(path).map_err(|e| ConfigError(format!("auth.jwt_public_key_pem_file {path}: {e}")))?;
            let (alg, key) = match cfg.jwt_public_key_algorithm.as_str() {
                "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
                "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                other => {
                    return Err(ConfigError(format!("auth.jwt_public_key_algorithm {other}: expected EdDSA or RS256")))
                }
            };
            let key = key.map_err(|e| ConfigError(format!("auth.jwt_public_key_pem_file {path}: {e}")))?;
            keys.push((alg, key));
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let keys = keys.into_iter().map(|(alg, key)| (alg, key, validation(cfg, alg))).collect();
        Ok(Some(Self { keys, leeway_ms: cfg.jwt_leeway_ms }))
    }

    /// Verify `jwt` (signature, algorithm, claims) and return its subject and expiry.
    ///
    /// # Errors
    /// Anything wrong with the token; the message says what (never the token itself).
    pub fn verify(&self, jwt: &str) -> Result<JwtClaims, JwtError> {
        if jwt.len() > JWT_BYTES_MAX {
            return Err(JwtError(format!("jwt longer than {JWT_BYTES_MAX} bytes")));
        }
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| JwtError(format!("malformed jwt: {e}")))?;
        let Some((_, key, validation)) = self.keys.iter().find(|(alg, _, _)| *alg == header.alg) else {
            return Err(JwtError(format!("jwt algorithm {:?} is not accepted", header.alg)));
        };
        let data =
            jsonwebtoken::decode::<Claims>(jwt, key, validation).map_err(|e| JwtError(format!("jwt rejected: {e}")))?;
        let sub = data.claims.sub;
        if sub.is_empty() || sub.len() > surge_engine::ID_BYTES_MAX {
            return Err(JwtError(format!("jwt sub must be 1..={} bytes", surge_engine::ID_BYTES_MAX)));
        }
        let expires_at_ms = data.claims.exp.saturating_mul(1_000).saturating_add(self.leeway_ms);
        Ok(JwtClaims { sub: sub.into(), expires_at_ms })
    }
}

fn validation(cfg: &AuthConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = cfg.jwt_leeway_ms / 1_000;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    // jsonwebtoken refuses any token that carries `aud` when no audience is set; an audience we
    // were not told to check is the shop's business, so it is only checked when configured.
    v.validate_aud = !cfg.jwt_audience.is_empty();
    if !cfg.jwt_audience.is_empty() {
        v.set_audience(&[&cfg.jwt_audience]);
        required.push("aud");
    }
    if !cfg.jwt_issuer.is_empty() {
        v.set_issuer(&[&cfg.jwt_issuer]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Sign a development JWT (HS256) for `sub`, valid for `valid_s` seconds, for the dev tokens
/// `surge serve` prints when nothing is configured. `None` if signing fails (the caller then
/// prints no example).
pub fn dev_user_jwt(secret: &str, sub: &str, valid_s: u64) -> Option<String> {
    #[derive(serde::Serialize)]
    struct DevClaims<'a> {
        sub: &'a str,
        exp: u64,
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).ok()?;
    let exp = jsonwebtoken::get_current_timestamp().saturating_add(valid_s);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &DevClaims { sub, exp }, &key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig { jwt_hs256_secret: "0123456789abcdef0123456789abcdef".into(), ..Default::default() }
    }

    #[test]
    fn dev_jwt_verifies_and_others_do_not() {
        let cfg = cfg();
        let v = JwtVerifier::from_config(&cfg).unwrap().unwrap();
        let jwt = dev_user_jwt(&cfg.jwt_hs256_secret, "alice", 60).unwrap();
        assert_eq!(&*v.verify(&jwt).unwrap().sub, "alice");
        let other = dev_user_jwt("another-secret-another-secret-xx", "alice", 60).unwrap();
        assert!(v.verify(&other).is_err());
        assert!(v.verify("garbage").is_err());
        assert!(v.verify(&"a".repeat(JWT_BYTES_MAX + 1)).is_err());
        let long_sub = dev_user_jwt(&cfg.jwt_hs256_secret, &"u".repeat(65), 60).unwrap();
        assert!(v.verify(&long_sub).is_err());
    }

    #[test]
    fn short_secret_and_unknown_algorithm_are_config_errors() {
        let short = AuthConfig { jwt_hs256_secret: "short".into(), ..Default::default() };
        assert!(JwtVerifier::from_config(&short).is_err());
        assert!(JwtVerifier::from_config(&AuthConfig::default()).unwrap().is_none());
    }
}
