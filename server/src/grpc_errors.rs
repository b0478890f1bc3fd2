//! Counts every gRPC error response by code (`strata_errors_total`), for all services on the
//! port: Strata's, the KurrentDB protocol's, and the errors tonic itself makes (a request that
//! does not decode, an unknown method). A status is read where it travels: in the response
//! headers of a trailers-only response, or in the trailers after a streamed body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::Code;

/// The layer to put on the gRPC server.
#[derive(Clone, Copy, Default)]
pub struct CountErrorsLayer;

impl<S> tower::Layer<S> for CountErrorsLayer {
    type Service = CountErrors<S>;
    fn layer(&self, inner: S) -> CountErrors<S> {
        CountErrors { inner }
    }
}

#[derive(Clone)]
pub struct CountErrors<S> {
    inner: S,
}

/// The error code a `grpc-status` header or trailer carries, if it is not OK.
fn error_code(headers: &HeaderMap) -> Option<Code> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    (code != 0).then(|| Code::from_i32(code))
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for CountErrors<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<Counted<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // A trailers-only response has its status in the headers and no trailers to follow.
            let counted = match error_code(response.headers()) {
                Some(code) => {
                    crate::metrics::get().error(code);
                    true
                }
                None => response.headers().contains_key("grpc-status"),
            };
            Ok(response.map(|inner| Counted { inner, counted }))
        })
    }
}

/// A response body that counts the error status in its trailers.
pub struct Counted<B> {
    inner: B,
    counted: bool,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(trailers) = frame.trailers_ref() {
                if !self.counted {
                    self.counted = true;
                    if let Some(code) = error_code(trailers) {
                        crate::metrics::get().error(code);
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_code_of_an_error_status_only() {
        let mut h = HeaderMap::new();
        assert_eq!(error_code(&h), None);
        h.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(error_code(&h), None);
        h.insert("grpc-status", "9".parse().unwrap());
        assert_eq!(error_code(&h), Some(Code::FailedPrecondition));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(error_code(&h), None);
    }
}
