//! The connection under every call: a tonic channel, over TLS for `https://` URLs, that adds
//! the client's Basic credentials to each request.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// What a client connects with.
#[derive(Clone, Default)]
pub(crate) struct Security {
    pub user: Option<(String, String)>,
    /// PEM of the CA(s) that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key of the client, for servers that accept client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server's certificate against, when it differs from the URL's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

/// A channel plus the credentials to send on it. Clones share the channel, which a client
/// of several cluster nodes replaces when it follows the leader (see [`Transport::follow`]).
#[derive(Clone)]
pub struct Transport {
    channel: Arc<RwLock<Channel>>,
    authorization: Option<HeaderValue>,
    /// The URL connected to (credentials removed).
    url: Arc<RwLock<String>>,
    /// Counts the moves to another node, for streams that must start again on it.
    moves: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Splits `user:password@` off a URL's authority.
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |s: &str| percent_decode(s);
            (
                format!("{scheme}://{host}{path}"),
                Some((decode(user), decode(password))),
            )
        }
        None => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("url", &self.url())
            .field("credentials", &self.authorization.is_some())
            .finish()
    }
}

impl Transport {
    pub(crate) async fn connect(
        url: &str,
        security: &Security,
        connect_timeout: std::time::Duration,
    ) -> Result<Transport> {
        let (url, in_url) = split_userinfo(url);
        let user = security.user.clone().or(in_url);
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Connect(format!("invalid URL {url:?}: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            match &security.ca_pem {
                Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(ca)),
                None => {
                    return Err(Error::Connect(format!(
                        "{url}: TLS needs the CA certificate that signed the server's (a CA file, e.g. the ca.pem of `strata certs dev`)"
                    )))
                }
            }
            if let Some((cert, key)) = &security.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &security.domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Connect(format!("{url}: TLS setup: {e}")))?;
        } else if user.is_some() {
            return Err(Error::Connect(format!(
                "{url}: credentials are sent only over TLS; use an https:// URL"
            )));
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Error::Connect(format!("{url}: {e}")))?;
        let authorization = match user {
            None => None,
            Some((u, p)) => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Some(
                    HeaderValue::from_str(&format!("Basic {token}"))
                        .map_err(|e| Error::Connect(format!("credentials: {e}")))?,
                )
            }
        };
        Ok(Transport {
            channel: Arc::new(RwLock::new(channel)),
            authorization,
            url: Arc::new(RwLock::new(url)),
            moves: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Changes whenever this transport moves to another node.
    pub(crate) fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moves.subscribe()
    }

    /// The URL of the node this transport talks to now.
    pub fn url(&self) -> String {
        self.url.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on, this transport and its clones talk to `other`'s node.
    pub(crate) fn follow(&self, other: &Transport) {
        if other.url() == self.url() {
            return; // already there
        }
        let channel = other
            .channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = channel;
        *self.url.write().unwrap_or_else(|p| p.into_inner()) = other.url();
        self.moves.send_modify(|n| *n += 1);
    }
}

impl tower_service::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited in `call`, on the channel in use at that moment.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(v) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, v.clone());
        }
        let mut channel = self
            .channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Box::pin(async move {
            futures::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut channel, cx))
                .await?;
            tower_service::Service::call(&mut channel, request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_userinfo;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_userinfo("https://admin:chan%40geit@db:2113/x"),
            (
                "https://db:2113/x".to_owned(),
                Some(("admin".to_owned(), "chan@geit".to_owned()))
            )
        );
        assert_eq!(
            split_userinfo("http://db:2113"),
            ("http://db:2113".to_owned(), None)
        );
    }
}
