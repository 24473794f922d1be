//! Who is asking: identities (from a bearer token or a client certificate), their roles and tenant, and the
//! layer that authenticates every QuotaService and QuotaAdmin call before it reaches a handler.
//!
//! - [`identity`]: configured identities, roles and tenant bindings, and the [`Caller`] of one request.
//! - [`token`]: bearer tokens, stored only as SHA-256 hashes.
//! - [`cert`]: the names a client certificate proves (SANs, and the subject CN).
//! - [`authenticate`]: the [`Authenticator`] (reloadable with the config) and its [`AuthLayer`].

pub mod authenticate;
pub mod cert;
pub mod identity;
pub mod token;

pub use authenticate::{AuthLayer, Authed, Authenticator, Service};
pub use identity::{AuthSettings, Caller, Identity};
