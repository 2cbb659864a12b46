//! API tokens and roles. Tokens are compared in constant time and never logged.

use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// SKU and stock management, fulfilment transitions, refund and dispute decisions, and
    /// everything a client may do.
    Admin,
    /// Orders, payment callbacks, queries, subscriptions.
    Client,
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }
}

/// The configured tokens.
#[derive(Clone)]
pub struct Tokens {
    tokens: Vec<(Vec<u8>, Role)>,
}

impl Tokens {
    /// From the `[auth]` table.
    pub fn new(cfg: &AuthConfig) -> Self {
        let admin = cfg.admin_tokens.iter().map(|t| (t.as_bytes().to_vec(), Role::Admin));
        let client = cfg.client_tokens.iter().map(|t| (t.as_bytes().to_vec(), Role::Client));
        Self { tokens: admin.chain(client).collect() }
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

/// A random token for development (`surge serve` without configured tokens).
pub fn generate_token(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let bytes: [u8; 16] = rng.gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}
