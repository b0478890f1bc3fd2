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
    frames: Frames,
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
        // A client part-way through a request gets our ACK at once (see `quick_ack`); one
        // whose request arrived whole gets it with the response, as before.
        if read > 0 && this.frames.feed(&buf.filled()[before..]) {
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

/// Where the client's HTTP/2 byte stream stands: enough to tell, after each read, whether the
/// client is in the middle of sending a request.
#[derive(Debug)]
struct Frames {
    /// Bytes still to skip: the preface, then the payload of the current frame.
    skip: usize,
    /// The header of the next frame, as far as it has arrived.
    header: [u8; 9],
    have: usize,
    /// Whether the last complete frame header leaves its stream open for more (HEADERS or
    /// DATA without END_STREAM).
    open: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            skip: PREFACE_LEN,
            header: [0; 9],
            have: 0,
            open: false,
        }
    }
}

impl Frames {
    /// Takes in bytes the client sent; true when they end part-way through a frame or after a
    /// frame that leaves a request stream open (the client has more to send).
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.header;
                self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                self.have = 0;
                const DATA: u8 = 0;
                const HEADERS: u8 = 1;
                const END_STREAM: u8 = 0x1;
                self.open = matches!(h[3], DATA | HEADERS) && h[4] & END_STREAM == 0;
            }
        }
        self.skip > 0 || self.have > 0 || self.open
    }
}

/// Asks the kernel to acknowledge what arrives on `fd` at once rather than delaying the ACK.
///
/// A client that leaves Nagle's algorithm on (the official KurrentDB Rust client does) holds
/// back the second small frame of a request (the DATA after the HEADERS, the closing empty
/// DATA) until its first is acknowledged, and Linux delays ACKs by up to 40 ms hoping to send
/// them with a response: 22 appends per second at one client. Linux leaves quick-ACK mode by
/// itself, so it is asked for after each read that ends part-way through a request; asking
/// after every read costs one more packet per request and measurably slowed append sessions.
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
                    frames: Frames::default(),
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

    /// An HTTP/2 frame header: payload length, type, flags, stream 1.
    fn frame(len: usize, kind: u8, flags: u8) -> Vec<u8> {
        let l = (len as u32).to_be_bytes();
        let mut f = vec![l[1], l[2], l[3], kind, flags, 0, 0, 0, 1];
        f.resize(9 + len, 0xab);
        f
    }

    #[test]
    fn frames_tell_when_the_client_is_part_way_through_a_request() {
        let mut f = Frames::default();
        // The preface alone, then a SETTINGS frame: nothing pending.
        assert!(f.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..20].as_ref()));
        assert!(!f.feed(
            &[
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[20..].to_vec(),
                frame(6, 4, 0)
            ]
            .concat()
        ));
        // HEADERS without END_STREAM: the DATA is still to come.
        assert!(f.feed(&frame(30, 1, 0x4)));
        // DATA with END_STREAM, split in two reads: pending until its last byte.
        let data = frame(100, 0, 0x1);
        assert!(f.feed(&data[..5]));
        assert!(f.feed(&data[5..50]));
        assert!(!f.feed(&data[50..]));
        // A whole unary request in one read (HEADERS, then DATA with END_STREAM): nothing.
        assert!(!f.feed(&[frame(30, 1, 0x4), frame(10, 0, 0x1)].concat()));
        // A streaming call's message (DATA without END_STREAM): more may follow.
        assert!(f.feed(&frame(10, 0, 0)));
        // HEADERS with END_STREAM (a request with no body).
        assert!(!f.feed(&frame(30, 1, 0x5)));
    }

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
