//! Validating `[auth]` into [`AuthSettings`].

use std::{collections::HashSet, sync::Arc};

use super::{
    ConfigError,
    file::{AuthSection, IdentitySection},
    validate::invalid,
};
use crate::auth::{AuthSettings, Identity, cert::CertName, token};

/// Checks `[auth]`: unique names and tokens, known roles, well-formed hashes and certificate names.
pub fn auth(a: &AuthSection) -> Result<AuthSettings, ConfigError> {
    let mut names = HashSet::new();
    let mut tokens = HashSet::new();
    let mut identities = Vec::with_capacity(a.identities.len());
    for (i, s) in a.identities.iter().enumerate() {
        let key = format!("auth.identities[{i}]");
        if !names.insert(s.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("'{}' is declared twice", s.name),
            ));
        }
        let identity = identity(&key, s)?;
        if let Some(t) = identity.token
            && !tokens.insert(t)
        {
            return Err(invalid(
                format!("{key}.token_sha256"),
                "is the same token as another identity's",
            ));
        }
        identities.push(identity);
    }
    let tenant_descriptor = a.tenant_descriptor.as_deref().unwrap_or("tenant");
    if tenant_descriptor.is_empty() || tenant_descriptor.chars().any(char::is_control) {
        return Err(invalid(
            "auth.tenant_descriptor",
            "must be a descriptor key (non-empty, no control characters)",
        ));
    }
    Ok(AuthSettings {
        identities,
        admin_from_anywhere: a.admin_from_anywhere.unwrap_or(false),
        tenant_descriptor: Arc::from(tenant_descriptor),
    })
}

/// An identity's roles: (worker, admin), at least one.
fn roles(key: &str, s: &IdentitySection) -> Result<(bool, bool), ConfigError> {
    let (mut worker, mut admin) = (false, false);
    for role in &s.roles {
        match role.as_str() {
            "worker" => worker = true,
            "admin" => admin = true,
            other => {
                return Err(invalid(
                    format!("{key}.roles"),
                    format!("'{other}' is not one of: worker, admin"),
                ));
            }
        }
    }
    if !worker && !admin {
        return Err(invalid(
            format!("{key}.roles"),
            "needs worker, admin or both",
        ));
    }
    Ok((worker, admin))
}

fn identity(key: &str, s: &IdentitySection) -> Result<Identity, ConfigError> {
    if s.name.is_empty() || s.name.len() > 128 || s.name.chars().any(char::is_control) {
        return Err(invalid(
            format!("{key}.name"),
            "must be 1..=128 bytes with no control characters",
        ));
    }
    let (worker, admin) = roles(key, s)?;
    let token = s
        .token_sha256
        .as_deref()
        .map(|h| {
            token::parse_hex(h).ok_or_else(|| {
                invalid(
                    format!("{key}.token_sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (quotad --hash-token prints it)",
                )
            })
        })
        .transpose()?;
    let certificate_names = s
        .certificate_names
        .iter()
        .map(|n| {
            if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) {
                return Err(invalid(
                    format!("{key}.certificate_names"),
                    format!("{n:?} must be 1..=256 bytes with no control characters"),
                ));
            }
            Ok(CertName::new(n))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if token.is_none() && certificate_names.is_empty() {
        return Err(invalid(
            key,
            "needs token_sha256 or certificate_names: nothing could prove this identity",
        ));
    }
    let tenant = match s.tenant.as_deref() {
        None => None,
        Some(t) if t.is_empty() || t.len() > 256 || t.chars().any(char::is_control) => {
            return Err(invalid(
                format!("{key}.tenant"),
                "must be 1..=256 bytes with no control characters",
            ));
        }
        Some(t) => Some(Arc::from(t)),
    };
    if s.bypass == Some(true) && !worker {
        return Err(invalid(
            format!("{key}.bypass"),
            "only a worker acquires: give the identity the worker role, or drop bypass",
        ));
    }
    Ok(Identity {
        name: crate::engine::intern(&s.name),
        worker,
        admin,
        bypass: s.bypass.unwrap_or(false),
        tenant,
        token,
        certificate_names,
    })
}
