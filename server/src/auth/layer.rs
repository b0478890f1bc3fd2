//! Authenticates every request before any service sees it, and records the caller as an
//! [`Access`] in the request's extensions.
//!
//! In secure mode a request authenticates with Basic credentials in the `authorization`
//! header (as KurrentDB clients send them) or, without that header, with the client
//! certificate it presented over TLS (the user named by its common name). Bad credentials are
//! refused whatever the method. Without credentials only health checks, KurrentDB gossip and
//! server features are served (probes and client discovery call them anonymously); everything
//! else gets UNAUTHENTICATED.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use prost::Message;
use strata_auth::{Access, AuthFailure, Authenticator};
use strata_proto::v1::{self, error_detail::Kind};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::{Code, Status};

use crate::net::listener::PeerInfo;

/// Gossip answers with the host and port the client used (the request's `:authority`) unless
/// `--advertise-host`/`--advertise-port` say otherwise, so a client that reconnects, or checks
/// the certificate's name, gets back the name it was given.
const GOSSIP_PREFIX: &str = "/event_store.client.gossip.";

/// The host and port of a gossip request's `:authority`.
#[derive(Debug, Clone)]
pub struct RequestAuthority {
    pub host: String,
    pub port: Option<u16>,
}

/// Methods served without credentials.
const ANONYMOUS: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/event_store.client.gossip.Gossip/",
    "/event_store.client.server_features.ServerFeatures/",
];

/// How requests are authenticated, set once the store (which holds the accounts) is open.
#[derive(Clone, Default)]
pub struct Edge(Arc<OnceLock<Option<Arc<Authenticator>>>>);

impl Edge {
    /// `None`: insecure mode, every request unrestricted.
    pub fn open(&self, authenticator: Option<Arc<Authenticator>>) {
        let _ = self.0.set(authenticator);
    }
}

#[derive(Clone)]
pub struct AuthLayer(pub Edge);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            edge: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    edge: Edge,
}

/// UNAUTHENTICATED: plain for KurrentDB clients (they map the code), with Strata's typed
/// detail for Strata's API.
fn unauthenticated(path: &str, reason: &str) -> Response<Body> {
    let message = format!("Unauthenticated: {reason}");
    let status = if path.starts_with("/strata.") {
        let detail = v1::ErrorDetail {
            kind: Some(Kind::Unauthenticated(v1::Unauthenticated {
                reason: reason.into(),
            })),
        };
        Status::with_details(
            Code::Unauthenticated,
            message,
            detail.encode_to_vec().into(),
        )
    } else {
        Status::unauthenticated(message)
    };
    status.into_http()
}

enum Credentials {
    None,
    Basic(String, String),
    Unreadable(&'static str),
}

fn credentials<B>(req: &Request<B>) -> Credentials {
    let Some(value) = req.headers().get("authorization") else {
        return Credentials::None;
    };
    let Some(encoded) = value.to_str().ok().and_then(|v| v.strip_prefix("Basic ")) else {
        return Credentials::Unreadable(
            "the authorization header must be Basic credentials (user:password, base64)",
        );
    };
    let Some(decoded) = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Credentials::Unreadable("the Basic credentials are not base64 of UTF-8 text");
    };
    match decoded.split_once(':') {
        Some((user, password)) => Credentials::Basic(user.to_owned(), password.to_owned()),
        None => {
            Credentials::Unreadable("the Basic credentials hold no ':' between user and password")
        }
    }
}

/// The common name of a certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Why a call's credentials were not accepted.
enum Denied {
    /// Nothing wrong with the credentials as far as this node can tell now: retry
    /// (UNAVAILABLE).
    Retry(&'static str),
    /// UNAUTHENTICATED, with the reason.
    Refused(String),
}

impl From<String> for Denied {
    fn from(reason: String) -> Self {
        Denied::Refused(reason)
    }
}

impl From<&str> for Denied {
    fn from(reason: &str) -> Self {
        Denied::Refused(reason.to_owned())
    }
}

async fn authenticate(
    auth: &Authenticator,
    given: Credentials,
    peer: Option<PeerInfo>,
) -> Result<Access, Denied> {
    let client: Option<IpAddr> = peer
        .as_ref()
        .and_then(|p| p.tcp.remote_addr())
        .map(|a| a.ip());
    match given {
        Credentials::Basic(user, password) => match auth.authenticate(client, &user, &password).await {
            Ok(p) => Ok(Access::User(p)),
            Err(AuthFailure::BadCredentials) => Err("wrong user name or password, or the account is disabled".into()),
            Err(AuthFailure::TooManyFailures { retry_after }) => Err(Denied::Refused(format!(
                "too many failed logins from this address; retry in {} s",
                retry_after.as_secs().max(1)
            ))),
            Err(AuthFailure::Busy) => Err(Denied::Retry(
                "every password check is busy (many logins at once); retry shortly",
            )),
            Err(AuthFailure::NoAccounts) => Err(Denied::Retry(
                "this node holds no user accounts yet (on a cluster the leader creates the initial ones and every node learns them from the log); retry shortly",
            )),
            Err(AuthFailure::DefaultPassword { login }) => Err(Denied::Refused(format!(
                "{login} still has the default password, which this server refuses because it listens beyond loopback; set another (see docs/security.md)"
            ))),
        },
        Credentials::Unreadable(reason) => Err(reason.into()),
        Credentials::None => {
            let cert = peer.and_then(|p| p.certs).and_then(|c| c.first().cloned());
            match cert {
                None => Ok(Access::Anonymous),
                Some(der) => {
                    let Some(cn) = common_name(&der) else {
                        return Err("the client certificate has no subject common name to name a user".into());
                    };
                    auth.certificate_user(&cn).map(Access::User).ok_or_else(|| {
                        Denied::Refused(format!("the client certificate names user {cn:?}, which does not exist or is disabled"))
                    })
                }
            }
        }
    }
}

impl<S> tower::Service<Request<Body>> for Auth<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The inner service was made ready by poll_ready: take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let edge = self.edge.0.get().cloned();
        if req.uri().path().starts_with(GOSSIP_PREFIX) {
            if let Some(a) = req.uri().authority() {
                let host = a
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let authority = RequestAuthority {
                    host,
                    port: a.port_u16(),
                };
                req.extensions_mut().insert(authority);
            }
        }
        Box::pin(async move {
            match edge {
                // The store is still opening: only health is served (by the gate), nothing
                // else is reached.
                None => {}
                Some(None) => {
                    req.extensions_mut().insert(Access::Unrestricted);
                }
                Some(Some(auth)) => {
                    let path = req.uri().path().to_owned();
                    let given = credentials(&req);
                    let peer = req.extensions().get::<PeerInfo>().cloned();
                    match authenticate(&auth, given, peer).await {
                        Ok(Access::Anonymous) if !ANONYMOUS.iter().any(|p| path.starts_with(p)) => {
                            return Ok(unauthenticated(&path, "this call needs credentials (Basic user:password over TLS, or a client certificate)"));
                        }
                        Ok(access) => {
                            req.extensions_mut().insert(access);
                        }
                        Err(Denied::Retry(why)) => return Ok(Status::unavailable(why).into_http()),
                        Err(Denied::Refused(reason)) => return Ok(unauthenticated(&path, &reason)),
                    }
                }
            }
            inner.call(req).await
        })
    }
}
