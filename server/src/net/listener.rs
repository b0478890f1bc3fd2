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

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// An accepted connection: it holds one of the cap's permits until closed, and fails its
/// reads once the handshake deadline passes without a full preface.
pub struct Conn {
    stream: TcpStream,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    seen: usize,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
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
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.deadline.is_some() {
            this.seen += buf.filled().len() - before;
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
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The stream of accepted connections for the gRPC server. Errors are handled here (logged,
/// backed off), so the server only ever sees connections.
pub fn incoming(
    listener: Arc<TcpListener>,
    limits: Limits,
) -> impl futures::Stream<Item = io::Result<Conn>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let over_cap = Arc::new(RateLimited::new(Duration::from_secs(10)));
    let no_fds = Arc::new(RateLimited::new(Duration::from_secs(10)));
    futures::stream::unfold(listener, move |l| {
        let (permits, over_cap, no_fds) = (permits.clone(), over_cap.clone(), no_fds.clone());
        async move {
            loop {
                match l.accept().await {
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
                        let conn = Conn {
                            stream,
                            deadline: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
                            seen: 0,
                            _permit: permit,
                        };
                        return Some((Ok(conn), l));
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
    })
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
