//! Accepting connections within bounds.
//!
//! - **Connection cap.** At most `max_connections` connections are open at once; one more is
//!   accepted and closed at once (a clear reset rather than a hang), with a warning at most
//!   every 10 s.
//! - **Handshake deadline.** A connection must send the 24-byte HTTP/2 preface within
//!   `handshake_timeout`, or it is closed: a peer that connects and says nothing holds no
//!   file descriptor for long. Peers that go silent later are found by HTTP/2 and TCP
//!   keep-alive (set on the gRPC server).
//! - **Out of file descriptors.** `accept` failing with EMFILE/ENFILE is logged (at most every
//!   10 s) and retried after a pause, instead of spinning a core.
//! - **The limit itself.** [`raise_fd_limit`] lifts the soft RLIMIT_NOFILE to the hard limit
//!   at start (1,024 soft is a common default, far below what a server needs).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes of the HTTP/2 client preface.
const PREFACE_LEN: usize = 24;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Lifts the soft file-descriptor limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(lim.rlim_max);
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Logs at most once per interval (per call site's limiter).
pub struct RateLimited {
    last: AtomicU64,
    every: Duration,
    started: Instant,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        RateLimited {
            last: AtomicU64::new(0),
            every,
            started: Instant::now(),
        }
    }

    /// True when the caller may log now (and then not again for the interval).
    pub fn allow(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now - last < self.every.as_millis() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// The bytes of a connection: plain TCP, or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What a request learns about its connection (in its extensions): the addresses, and the
/// client's certificate chain when it presented one over TLS (verified against `--tls-ca`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub tcp: TcpConnectInfo,
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// An accepted connection: it holds one of the cap's permits until closed, and fails its
/// reads once the handshake deadline passes without a full preface.
pub struct Conn {
    stream: Io,
    fd: std::os::fd::RawFd,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    seen: usize,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match &self.stream {
            Io::Plain(s) => PeerInfo {
                tcp: s.connect_info(),
                certs: None,
            },
            Io::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    tcp: tcp.connect_info(),
                    certs: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
                }
            }
        }
    }
}

macro_rules! io {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = io!(this, s => s.poll_read(cx, buf));
        let read = buf.filled().len() - before;
        if read > 0 {
            quick_ack(this.fd);
        }
        if this.deadline.is_some() {
            this.seen += read;
            if this.seen >= PREFACE_LEN {
                this.deadline = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Asks the kernel to acknowledge what arrives on `fd` at once rather than delaying the ACK.
///
/// Linux turns quick-ACK mode off again by itself, so it is re-armed after every read. Without
/// it a client that leaves Nagle's algorithm on (the official KurrentDB Rust client does) waits
/// for our delayed ACK (40 ms) before sending the second small frame of a request: 22 appends
/// per second at one client instead of thousands.
fn quick_ack(fd: std::os::fd::RawFd) {
    #[cfg(target_os = "linux")]
    {
        let one: libc::c_int = 1;
        // SAFETY: `fd` is the open socket this connection owns; the option value is an int
        // that lives across the call. A failure only leaves the kernel's default in place.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The stream of accepted connections for the gRPC server. Errors are handled here (logged,
/// backed off), so the server only ever sees connections. With `tls`, each connection's TLS
/// handshake runs in its own task, bounded by the handshake timeout, so a slow client delays
/// nobody else.
pub fn incoming(
    listener: Arc<TcpListener>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
) -> impl futures::Stream<Item = io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<Conn>(64);
    tokio::spawn(accept_loop(listener, limits, tls, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

async fn accept_loop(
    l: Arc<TcpListener>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<Conn>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let over_cap = RateLimited::new(Duration::from_secs(10));
    let no_fds = RateLimited::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            // The server stopped taking connections (shutdown): so does the listener.
            _ = tx.closed() => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    if over_cap.allow() {
                        tracing::warn!(%peer, max = limits.max_connections,
                            "refusing a connection: the connection limit (--max-connections) is reached");
                    }
                    drop(stream);
                    continue;
                };
                // Small gRPC frames must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                let conn = move |stream| Conn {
                    stream,
                    fd,
                    deadline: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
                    seen: 0,
                    _permit: permit,
                };
                match &tls {
                    None => {
                        if tx.send(conn(Io::Plain(stream))).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            let shaken = tokio::time::timeout(
                                limits.handshake_timeout,
                                acceptor.accept(stream),
                            )
                            .await;
                            match shaken {
                                Ok(Ok(s)) => {
                                    let _ = tx.send(conn(Io::Tls(Box::new(s)))).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
            Err(e) if out_of_fds(&e) => {
                if no_fds.allow() {
                    tracing::error!(error = %e, open = limits.max_connections - permits.available_permits(),
                        "cannot accept connections: out of file descriptors; raise the limit (ulimit -n) or lower --max-connections");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_allows_once_per_interval() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert!(r.allow());
        assert!(!r.allow());
        let r = RateLimited::new(Duration::ZERO);
        assert!(r.allow());
        assert!(r.allow());
    }
}
