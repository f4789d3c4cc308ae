//! Tunnel bytes moved by the kernel. A tunnel veto does not open is only
//! copied, so on a plain client connection both ends are TCP sockets and
//! `splice(2)` moves the bytes socket → pipe → socket without copying them
//! through user space: the copy that made tunnels cost half of a direct
//! connection's throughput (BENCHMARKS.md). Clients on the TLS listener,
//! and opened tunnels, keep the ordinary copy.

use crate::guard::Guarded;
use crate::idle::Activity;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The client side of a tunnel: the raw socket when the client came over
/// plain TCP (with any bytes hyper read past the CONNECT head), else the
/// upgraded connection as hyper hands it over.
pub enum ClientIo {
    Plain { tcp: TcpStream, pending: Bytes },
    Other(TokioIo<Upgraded>),
}

impl ClientIo {
    pub fn new(up: Upgraded) -> ClientIo {
        match up.downcast::<TokioIo<Guarded<TcpStream>>>() {
            Ok(parts) => {
                // What hyper read past the head comes first, then what the
                // guard read but had not handed on yet.
                let (tcp, held) = parts.io.into_inner().into_parts();
                let pending = if held.is_empty() {
                    parts.read_buf
                } else {
                    let mut all = parts.read_buf.to_vec();
                    all.extend_from_slice(&held);
                    Bytes::from(all)
                };
                ClientIo::Plain { tcp, pending }
            }
            Err(up) => ClientIo::Other(TokioIo::new(up)),
        }
    }
}

/// What a tunnel's client can offer the copy.
pub trait Spliceable {
    /// The socket, when nothing is left to read from a buffer first.
    fn socket(&self) -> Option<&TcpStream>;
}

impl Spliceable for ClientIo {
    fn socket(&self) -> Option<&TcpStream> {
        match self {
            ClientIo::Plain { tcp, pending } if pending.is_empty() => Some(tcp),
            _ => None,
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain { tcp, pending } => {
                if !pending.is_empty() {
                    let n = pending.len().min(buf.remaining());
                    buf.put_slice(&pending.split_to(n));
                    return Poll::Ready(Ok(()));
                }
                Pin::new(tcp).poll_read(cx, buf)
            }
            ClientIo::Other(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain { tcp, .. } => Pin::new(tcp).poll_write(cx, buf),
            ClientIo::Other(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain { tcp, .. } => Pin::new(tcp).poll_flush(cx),
            ClientIo::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain { tcp, .. } => Pin::new(tcp).poll_shutdown(cx),
            ClientIo::Other(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Pipe capacity: four times Linux's default, so a bulk transfer moves
/// 256 KiB per pair of calls. Best effort: a smaller pipe still works.
const PIPE: usize = 256 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure is harmless.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE as libc::c_int) };
        Ok(Pipe { read, write })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call; null
    // offsets mean "the current position", as sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves everything `from` sends to `to`, then half-closes `to`. The pipe
/// is made at the first byte, so an idle tunnel holds no pipe.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    loop {
        // Fill the pipe only when it is empty: then the pipe cannot be the
        // reason for EAGAIN, and readiness means the socket's.
        from.readable().await?;
        let p = match &pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), p.write.as_raw_fd(), PIPE)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // SAFETY: shutdown on a socket we hold open.
            unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        activity.touch();
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(p.read.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(k) => {
                    left -= k;
                    moved.fetch_add(k as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Both directions until both ends closed (or one failed). Returns the
/// bytes moved client → upstream and upstream → client so far, also kept
/// in `sent` and `received` as they move.
pub async fn both_ways(
    client: &TcpStream,
    upstream: &TcpStream,
    sent: &AtomicU64,
    received: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    tokio::try_join!(
        pump(client, upstream, sent, activity),
        pump(upstream, client, received, activity)
    )
    .map(|_| ())
}
