//! Authenticating one call: a bearer token, else a client certificate, else anonymous when no identity is
//! configured; then the role the service needs. Runs as a layer in front of QuotaService and QuotaAdmin, on
//! the HTTP request itself (health and reflection stay open: a load balancer and grpcurl need them without
//! a secret).

// Wire-facing: every value here may come from a request, so arithmetic is checked or saturating.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::{
    future::Ready,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures_util::future::Either;

use arc_swap::ArcSwap;
use http::HeaderMap;
use rustls_pki_types::CertificateDer;
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{AuthSettings, Caller, Identity, cert, token};

/// Which service a call is for: each needs its own role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// QuotaService: needs `worker`.
    Quota,
    /// QuotaAdmin: needs `admin`.
    Admin,
}

/// Checks callers against the auth settings in force (swapped on reload, so a revoked token stops working
/// without a restart).
#[derive(Debug)]
pub struct Authenticator {
    settings: ArcSwap<AuthSettings>,
    /// True while no identity is configured: QuotaService calls need no check at all (the hot path of a
    /// server without auth reads this one flag).
    open: AtomicBool,
}

impl Authenticator {
    /// Authenticates against `settings`.
    pub fn new(settings: AuthSettings) -> Self {
        Self {
            open: AtomicBool::new(!settings.required()),
            settings: ArcSwap::from_pointee(settings),
        }
    }

    /// Swaps in reloaded settings.
    pub fn replace(&self, settings: AuthSettings) {
        let open = !settings.required();
        self.settings.store(Arc::new(settings));
        self.open.store(open, Ordering::Release);
    }

    /// True when `service` takes anonymous calls from anyone, so a call needs no look at its request.
    pub fn is_open(&self, service: Service) -> bool {
        service == Service::Quota && self.open.load(Ordering::Acquire)
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<AuthSettings> {
        self.settings.load_full()
    }

    /// Who is calling `service`: `Ok(None)` for an anonymous caller (no identities configured), else the
    /// identity, or the status that refuses the call.
    pub fn authenticate(
        &self,
        service: Service,
        headers: &HeaderMap,
        remote: Option<SocketAddr>,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Option<Caller>, Status> {
        let settings = self.settings.load();
        if !settings.required() {
            let local = remote.is_some_and(|a| a.ip().is_loopback());
            if service == Service::Admin && !local && !settings.admin_from_anywhere {
                return Err(Status::permission_denied(
                    "QuotaAdmin answers only loopback peers while no [auth] identities are configured \
                     (configure identities with the admin role, or set auth.admin_from_anywhere = true)",
                ));
            }
            return Ok(None);
        }
        let identity = identify(&settings, headers, certs)?;
        let allowed = match service {
            Service::Quota => identity.worker,
            Service::Admin => identity.admin,
        };
        if !allowed {
            let role = if service == Service::Admin {
                "admin"
            } else {
                "worker"
            };
            return Err(Status::permission_denied(format!(
                "identity '{}' does not have the {role} role",
                identity.name
            )));
        }
        Ok(Some(Caller {
            identity: Some(identity.name),
            tenant: identity.tenant.clone(),
            tenant_descriptor: settings.tenant_descriptor.clone(),
            bypass: identity.bypass,
        }))
    }
}

/// The identity a call proves: its bearer token when it sends one, else its client certificate.
fn identify<'s>(
    settings: &'s AuthSettings,
    headers: &HeaderMap,
    certs: Option<&[CertificateDer<'static>]>,
) -> Result<&'s Identity, Status> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let token =
            value.to_str().ok().and_then(token::bearer).ok_or_else(|| {
                Status::unauthenticated("authorization: expected 'Bearer <token>'")
            })?;
        let hash = token::hash(token);
        return settings
            .identities
            .iter()
            .find(|i| i.token.as_ref().is_some_and(|t| token::same(t, &hash)))
            .ok_or_else(|| Status::unauthenticated("authorization: the token is not valid here"));
    }
    if let Some(cert) = certs.and_then(<[_]>::first) {
        return settings
            .identities
            .iter()
            .find(|i| i.certificate_names.iter().any(|n| cert::names(cert, n)))
            .ok_or_else(|| {
                Status::unauthenticated("the client certificate names no configured identity")
            });
    }
    Err(Status::unauthenticated(
        "credentials required: send 'authorization: Bearer <token>' or a client certificate",
    ))
}

/// The auth layer around QuotaService or QuotaAdmin: authenticates each call from its HTTP request (headers,
/// peer address, peer certificates) and leaves its [`Caller`] in the request's extensions, where the
/// handler finds it (none for an anonymous caller, so a server without auth pays no allocation for it). A
/// refused call is answered at once with its status; the service never sees it.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    service: Service,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AuthLayer {
    /// Authenticates calls to `service` with `auth`, counting refusals in `metrics` when on.
    pub fn new(
        auth: Arc<Authenticator>,
        service: Service,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        Self {
            auth,
            service,
            metrics,
        }
    }

    /// `service` behind this layer.
    pub fn around<S>(&self, service: S) -> Authed<S> {
        Authed {
            inner: service,
            layer: self.clone(),
        }
    }

    /// True when this layer's service takes any call without a look at it (a QuotaService with no
    /// identities configured), so the connection's info need not be put in the request for it.
    pub fn open(&self) -> bool {
        self.auth.is_open(self.service)
    }

    /// Authenticates `request` from its headers and the connection's info in its extensions (tonic's
    /// `TcpConnectInfo`, or `TlsConnectInfo` over TLS), leaving the [`Caller`] there; or the refusal.
    pub fn check<B>(&self, request: &mut http::Request<B>) -> Result<(), Status> {
        if self.open() {
            return Ok(());
        }
        let ext = request.extensions();
        let tls = ext.get::<TlsConnectInfo<TcpConnectInfo>>();
        let remote = ext
            .get::<TcpConnectInfo>()
            .or(tls.map(TlsConnectInfo::get_ref))
            .and_then(TcpConnectInfo::remote_addr);
        let certs = tls.and_then(TlsConnectInfo::peer_certs);
        let caller = self
            .auth
            .authenticate(self.service, request.headers(), remote, certs.as_deref().map(Vec::as_slice))
            .inspect_err(|status| {
                tracing::debug!(code = ?status.code(), message = status.message(), "call refused by auth");
                if let Some(m) = &self.metrics {
                    m.refused(status.code());
                }
            })?;
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        Ok(())
    }
}

/// A service behind an [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authed<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S: NamedService> NamedService for Authed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    /// The service's own answer, or the refusal at once.
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.layer.check(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(status) => Either::Right(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(admin_from_anywhere: bool) -> Authenticator {
        Authenticator::new(AuthSettings {
            admin_from_anywhere,
            tenant_descriptor: Arc::from("tenant"),
            ..AuthSettings::default()
        })
    }

    #[test]
    fn without_identities_admin_answers_loopback_peers_only() {
        let md = HeaderMap::new();
        let remote: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let local6: SocketAddr = "[::1]:4000".parse().unwrap();
        let auth = open(false);
        let e = auth
            .authenticate(Service::Admin, &md, Some(remote), None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(auth.authenticate(Service::Admin, &md, None, None).is_err());
        for peer in [local, local6] {
            assert!(matches!(
                auth.authenticate(Service::Admin, &md, Some(peer), None),
                Ok(None)
            ));
        }
        assert!(matches!(
            auth.authenticate(Service::Quota, &md, Some(remote), None),
            Ok(None)
        ));
        let anywhere = open(true);
        assert!(matches!(
            anywhere.authenticate(Service::Admin, &md, Some(remote), None),
            Ok(None)
        ));
    }
}
