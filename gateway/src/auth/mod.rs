//! Who a connection is: roles, static tokens ([`tokens`]), user JWTs ([`jwt`]), and what a
//! `user` connection may touch ([`scope`]).
//!
//! Three roles (issue 10; DESIGN.md "Roles"): `admin` (operations staff), `service` (the shop's
//! backend: acts for any user, relays the payment provider's callbacks) and `user` (an end
//! user's browser or app, authenticated by a JWT the shop signs; acts only as its `sub`). Which
//! ops each role may send is the `OPS` table in `protocol/mod.rs`.

pub mod jwt;
pub(crate) mod scope;
pub mod tokens;

use std::sync::Arc;

pub use jwt::{JwtClaims, JwtError, JwtVerifier};
pub use tokens::{generate_token, Tokens};

use crate::config::{AuthConfig, ConfigError};

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operations staff: SKU and stock management, fulfilment, refund and dispute decisions,
    /// and everything `service` may do.
    Admin,
    /// The shop's backend (was `client`): orders for any user, payment callbacks (`pay`),
    /// queries, subscriptions.
    Service,
    /// An end user (JWT `sub`): its own orders and topics, SKU reads; never `pay`.
    User,
}

impl Role {
    /// Wire name: `admin`, `service` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Service => "service",
            Role::User => "user",
        }
    }
}

/// An authenticated connection: its role and, for `user`, the user id and when the token
/// expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The role.
    pub role: Role,
    /// `user` only: the JWT's `sub`, the only user this connection acts as.
    pub user_id: Option<Arc<str>>,
    /// `user` only: `exp` + leeway in ms since the Unix epoch; requests after it are refused
    /// `unauthorized` and the connection is closed.
    pub expires_at_ms: Option<u64>,
}

impl Identity {
    fn of_role(role: Role) -> Self {
        Self { role, user_id: None, expires_at_ms: None }
    }
}

/// Static tokens and the JWT verifier, built once at start from `[auth]`.
pub struct Authenticator {
    tokens: Tokens,
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// From the `[auth]` table.
    ///
    /// ```
    /// use surge_gateway::{auth::Authenticator, AuthConfig, Role};
    /// let cfg = AuthConfig { admin_tokens: vec!["admin-secret".into()], ..Default::default() };
    /// let auth = Authenticator::new(&cfg).unwrap();
    /// assert_eq!(auth.token("admin-secret").map(|i| i.role), Some(Role::Admin));
    /// assert!(auth.jwt("a.b.c").is_err()); // no JWT key configured
    /// ```
    ///
    /// # Errors
    /// A JWT key that cannot be loaded (see [`JwtVerifier::from_config`]).
    pub fn new(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        Ok(Self { tokens: Tokens::new(cfg), jwt: JwtVerifier::from_config(cfg)? })
    }

    /// The identity of a static token (`admin` or `service`), if it is one of ours.
    pub fn token(&self, token: &str) -> Option<Identity> {
        self.tokens.verify(token).map(Identity::of_role)
    }

    /// The `user` identity of a JWT.
    ///
    /// # Errors
    /// No JWT key is configured, or the token is refused (see [`JwtVerifier::verify`]).
    pub fn jwt(&self, jwt: &str) -> Result<Identity, JwtError> {
        let Some(v) = &self.jwt else {
            return Err(JwtError("JWT authentication is not configured on this server".into()));
        };
        let c = v.verify(jwt)?;
        Ok(Identity { role: Role::User, user_id: Some(c.sub), expires_at_ms: Some(c.expires_at_ms) })
    }

    /// `Authorization: Bearer <credential>` on the WebSocket upgrade: a static token, else a
    /// JWT.
    ///
    /// # Errors
    /// Neither a token of ours nor a valid JWT.
    pub fn bearer(&self, credential: &str) -> Result<Identity, JwtError> {
        match self.token(credential) {
            Some(id) => Ok(id),
            None => self.jwt(credential),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (JWT times are wall-clock, not engine time).
pub(crate) fn wall_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
