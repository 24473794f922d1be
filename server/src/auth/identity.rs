//! Configured identities and the caller of one request.

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::sync::Arc;

use super::cert::CertName;

/// One configured identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Its configured name, interned (leases record it as their owner).
    pub name: &'static str,
    /// May call QuotaService.
    pub worker: bool,
    /// May call QuotaAdmin.
    pub admin: bool,
    /// Its Acquires are never limited (`bypass = true`): granted, counted, holding a lease.
    pub bypass: bool,
    /// The tenant it is bound to, if any.
    pub tenant: Option<Arc<str>>,
    /// SHA-256 of its bearer token, if it has one.
    pub token: Option<[u8; 32]>,
    /// Client certificate names that prove it (a subject alternative name, DNS or IP, or the subject CN).
    pub certificate_names: Vec<CertName>,
}

/// Who may call what, as configured (swapped whole on reload).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthSettings {
    /// Configured identities; when there are none, calls are anonymous (see [`Caller::anonymous`]).
    pub identities: Vec<Identity>,
    /// Without identities: QuotaAdmin answers any peer, not only loopback ones.
    pub admin_from_anywhere: bool,
    /// The descriptor a tenant-bound identity fills and may not change.
    pub tenant_descriptor: Arc<str>,
}

impl AuthSettings {
    /// True when calls must prove an identity.
    pub fn required(&self) -> bool {
        !self.identities.is_empty()
    }
}

/// The caller of one request, as the interceptor established it.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The identity's name; `None` for an anonymous caller (no identities configured).
    pub identity: Option<&'static str>,
    /// The tenant the caller is bound to.
    pub tenant: Option<Arc<str>>,
    /// The descriptor that names tenants.
    pub tenant_descriptor: Arc<str>,
    /// The identity's Acquires are never limited.
    pub bypass: bool,
}

impl Caller {
    /// A caller on a server with no identities configured: no owner, no tenant binding.
    pub fn anonymous() -> Self {
        Self {
            identity: None,
            tenant: None,
            tenant_descriptor: Arc::from("tenant"),
            bypass: false,
        }
    }

    /// Applies the caller's tenant binding to a request's descriptors: fills the tenant when absent, and
    /// refuses another tenant's. `Err` carries the message for PERMISSION_DENIED.
    pub fn bind_tenant(&self, descriptors: &mut Vec<(String, String)>) -> Result<(), String> {
        let Some(tenant) = &self.tenant else {
            return Ok(());
        };
        let key = &*self.tenant_descriptor;
        match descriptors.iter().find(|(k, _)| k == key) {
            None => {
                descriptors.push((key.to_owned(), tenant.to_string()));
                Ok(())
            }
            Some((_, v)) if **v == **tenant => Ok(()),
            Some(_) => Err(format!(
                "descriptors[{key:?}]: identity '{}' is bound to another tenant",
                self.identity.unwrap_or("")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_tenant_is_filled_in_and_cannot_be_changed() {
        let caller = Caller {
            identity: Some("acme-worker"),
            tenant: Some(Arc::from("acme")),
            tenant_descriptor: Arc::from("tenant"),
            bypass: false,
        };
        let mut d = vec![];
        caller.bind_tenant(&mut d).unwrap();
        assert_eq!(d, vec![("tenant".to_owned(), "acme".to_owned())]);
        caller.bind_tenant(&mut d).unwrap();
        assert_eq!(d.len(), 1);
        let mut other = vec![("tenant".to_owned(), "globex".to_owned())];
        let e = caller.bind_tenant(&mut other).unwrap_err();
        assert!(e.starts_with("descriptors[\"tenant\"]"), "{e}");
        let mut any = vec![("tenant".to_owned(), "x".to_owned())];
        Caller::anonymous().bind_tenant(&mut any).unwrap();
        assert_eq!(any[0].1, "x");
    }
}
