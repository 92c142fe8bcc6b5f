//! A connection whose small writes are gathered into one system call: the
//! server's accepted client connections, and every connection made by
//! [`crate::client::Connector`] (the Rust client, the benchmark, the harness,
//! and a member's gRPC calls to its peers).
//!
//! h2 (under tonic and hyper) keeps one frame's payload aside, without
//! copying it into its write buffer, when the payload is at least its
//! "chain threshold": 256 bytes on a connection that does vectored writes,
//! 1,024 on one that does not. Until that frame is written it accepts no
//! other, so every such DATA frame costs a `writev` of its own, and so did
//! nearly every unary response here: a Range of one key with a 256-byte
//! value is a 316-byte DATA frame. Measured on a single member under
//! 100,000 linearizable ranges from 1,000 clients (strace, /proc/PID/io):
//! 1.35–1.45 write calls per response, where etcd (grpc-go's writer flushes
//! only when it has nothing more to send) made 0.2; every one of them a TCP
//! segment that also wakes the client.
//!
//! [`CoalesceWrites`] says it does no vectored writes, so payloads under
//! 1,024 bytes are copied into h2's buffer with the frames around them, and
//! it keeps what it is given until it is flushed (h2 flushes once it has
//! written all it had, or needs room), so a frame kept aside and the buffer
//! before it also leave in one call. The cost is a copy of the bytes that
//! leave, which is far cheaper than the system calls and segments it saves.
//!
//! The client side has the same pattern: h2 copies a request's DATA frame
//! into its buffer only below the threshold (a put of a 256-byte value is a
//! ~280-byte frame), and requests issued together (a burst of clients
//! answered by one gathered write) left one `writev` each.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// How much a connection gathers before it writes without being flushed: a
/// few of h2's 16 KiB frames, so a large response is not copied twice.
const GATHER_BYTES: usize = 64 * 1024;

/// The most a connection keeps allocated between flushes (h2's own write
/// buffer is as large): a connection that once sent a large response and
/// then idles (a watch) does not hold [`GATHER_BYTES`] for its life.
const KEEP_BYTES: usize = 16 * 1024;

/// A connection that writes what it is given when flushed (or when it has
/// gathered [`GATHER_BYTES`]), in as few system calls as the socket takes.
///
/// Not tokio's `BufWriter`, which gathers the same way: it says it does
/// vectored writes (so h2 would keep its 256-byte threshold and flush after
/// every response, as before), and it allocates its whole buffer for the
/// connection's life, where this one keeps at most [`KEEP_BYTES`].
pub struct CoalesceWrites<IO> {
    /// The connection.
    io: IO,
    /// Bytes accepted from the writer and not yet written to `io`.
    pending: Vec<u8>,
    /// How much of `pending` `io` has taken (a write may take part of it).
    written: usize,
}

impl<IO> CoalesceWrites<IO> {
    /// Wraps a connection.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<IO> CoalesceWrites<IO> {
    /// The connection itself, for a writer that gathers its own writes (a
    /// raft stream). Bytes written and not yet flushed are dropped with the
    /// wrapper: call it on a connection not written to.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncWrite + Unpin> CoalesceWrites<IO> {
    /// Writes everything pending to `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        if self.pending.capacity() > KEEP_BYTES {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalesceWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalesceWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() + buf.len() > GATHER_BYTES {
            ready!(this.poll_drain(cx))?;
            if buf.len() >= GATHER_BYTES {
                // Nothing gathered, and too large to be worth a copy.
                return Pin::new(&mut this.io).poll_write(cx, buf);
            }
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // What raises h2's threshold for copying a payload (see the module).
        false
    }
}

impl<IO: Connected> Connected for CoalesceWrites<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket that counts the writes that reach it and takes at most
    /// `max` bytes per write.
    struct Counting {
        writes: usize,
        max: usize,
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            let n = buf.len().min(this.max);
            this.bytes.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn counting(max: usize) -> CoalesceWrites<Counting> {
        CoalesceWrites::new(Counting {
            writes: 0,
            max,
            bytes: Vec::new(),
            flushes: 0,
        })
    }

    #[tokio::test]
    async fn small_writes_leave_together_when_flushed() {
        let mut io = counting(usize::MAX);
        assert!(!io.is_write_vectored());
        for i in 0..10u8 {
            io.write_all(&[i; 300]).await.unwrap();
        }
        assert_eq!(io.io.writes, 0, "nothing leaves before a flush");
        io.flush().await.unwrap();
        assert_eq!((io.io.writes, io.io.flushes), (1, 1));
        let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 300]).collect();
        assert_eq!(io.io.bytes, want);
        io.flush().await.unwrap();
        assert_eq!(io.io.writes, 1, "an empty flush writes nothing");
        assert!(
            io.pending.capacity() >= 3000,
            "a small gathering keeps its room"
        );
    }

    #[tokio::test]
    async fn a_socket_that_takes_part_gets_the_rest_in_order() {
        let mut io = counting(1000);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        io.write_all(&data).await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.io.bytes, data);
        assert_eq!(io.io.writes, 5);
    }

    #[tokio::test]
    async fn too_much_gathered_is_written_before_more_is_taken() {
        let mut io = counting(usize::MAX);
        io.write_all(&vec![1; GATHER_BYTES - 10]).await.unwrap();
        io.write_all(&[2; 100]).await.unwrap();
        assert_eq!(io.io.writes, 1, "the gathered bytes left first");
        io.write_all(&vec![3; GATHER_BYTES]).await.unwrap();
        assert_eq!(
            io.io.writes, 3,
            "the 100 bytes, then the large write as it is"
        );
        assert!(
            io.pending.capacity() <= KEEP_BYTES,
            "a large gathering is let go"
        );
        io.shutdown().await.unwrap();
        let mut want = vec![1; GATHER_BYTES - 10];
        want.extend([2; 100]);
        want.extend(vec![3; GATHER_BYTES]);
        assert_eq!(io.io.bytes, want);
    }

    #[tokio::test]
    async fn reads_pass_through_and_writes_arrive_once_flushed() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut io = CoalesceWrites::new(a);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        io.write_all(b"po").await.unwrap();
        io.write_all(b"ng").await.unwrap();
        io.flush().await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
