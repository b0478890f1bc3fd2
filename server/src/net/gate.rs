//! Serves the port from the moment it is bound. Until the store is open only the health
//! service answers (NOT_SERVING); every other call gets UNAVAILABLE with a message saying the
//! store is recovering, which clients retry, rather than UNIMPLEMENTED, which they treat as
//! permanent. Once the full set of services is installed, requests go to it, on the same
//! connections.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::service::Routes;

/// Where the full services go once the store is open.
#[derive(Clone, Default)]
pub struct Ready(Arc<OnceLock<Routes>>);

impl Ready {
    /// Installs the services; later calls are ignored.
    pub fn open(&self, routes: Routes) {
        let _ = self.0.set(routes.prepare());
    }
}

#[derive(Clone)]
pub struct GateLayer(pub Ready);

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, starting: S) -> Gate<S> {
        Gate {
            starting,
            ready: self.0.clone(),
        }
    }
}

/// `starting` serves health while the store opens; `ready` serves everything afterwards.
#[derive(Clone)]
pub struct Gate<S> {
    starting: S,
    ready: Ready,
}

const HEALTH: &str = "/grpc.health.v1.Health/";

impl<S> tower::Service<Request<Body>> for Gate<S>
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

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both inner services are routers that are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let Some(routes) = self.ready.0.get() {
            let mut routes = routes.clone();
            return Box::pin(async move { tower::Service::call(&mut routes, req).await });
        }
        if req.uri().path().starts_with(HEALTH) {
            let mut starting = self.starting.clone();
            return Box::pin(async move { starting.call(req).await });
        }
        let status = tonic::Status::unavailable(
            "the store is recovering (opening its log and index); retry shortly",
        );
        Box::pin(async move { Ok(status.into_http()) })
    }
}
