//! Static API tokens (roles `admin` and `service`). Tokens are compared in constant time and
//! never logged.

use subtle::ConstantTimeEq;

use super::Role;
use crate::config::AuthConfig;

/// The configured static tokens: `[auth] admin_tokens`, `service_tokens`, and the deprecated
/// `client_tokens` (role `service`).
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<(Vec<u8>, Role)>,
}

impl Tokens {
    /// From the `[auth]` table. `client_tokens` (the old name) map to role `service`.
    ///
    /// ```
    /// use surge_gateway::{auth::Tokens, AuthConfig, Role};
    /// let cfg = AuthConfig { service_tokens: vec!["svc-secret-1".into()], ..Default::default() };
    /// assert_eq!(Tokens::new(&cfg).verify("svc-secret-1"), Some(Role::Service));
    /// assert_eq!(Tokens::new(&cfg).verify("guess"), None);
    /// ```
    pub fn new(cfg: &AuthConfig) -> Self {
        let admin = cfg.admin_tokens.iter().map(|t| (t.as_bytes().to_vec(), Role::Admin));
        let service =
            cfg.service_tokens.iter().chain(&cfg.client_tokens).map(|t| (t.as_bytes().to_vec(), Role::Service));
        Self { tokens: admin.chain(service).collect() }
    }

    /// The role of `token`, if it is one of ours. Every configured token is compared (no early
    /// exit), each in constant time.
    pub fn verify(&self, token: &str) -> Option<Role> {
        let mut found = None;
        for (t, role) in &self.tokens {
            if bool::from(t.as_slice().ct_eq(token.as_bytes())) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

/// A random token for development (`surge serve` without configured tokens): `prefix`, `_`,
/// then 32 hex digits (128 random bits).
pub fn generate_token(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let bytes: [u8; 16] = rng.gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}
