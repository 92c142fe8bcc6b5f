//! The peer port: one listener for raft streams and the peer gRPC
//! services, as etcd's peer port carries its rafthttp streams and its peer
//! HTTP handlers.
//!
//! Each accepted connection (after TLS, when the port has it) is told apart
//! by its first bytes: a raft stream starts with
//! [`crate::raft::stream::PREFACE`], anything else is handed to tonic with
//! those bytes put back in front (an HTTP/2 client's preface starts with
//! `PRI`). Every connection's task belongs to [`serve`]'s future: aborting
//! it ends them all. A raft stream on plain TCP, once accepted, is handed
//! to the raft thread, which reads it itself and closes it when it stops
//! (`crate::raft::node::InboxReceiver`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_tls::server::{ConnInfo, ServerStream, TlsIncoming};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::{Connected, Router};

use crate::raft::stream::PREFACE;
use crate::raft::StreamReceiver;

/// How long a new connection may take to send its first bytes.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait after the listener failed to accept (out of file
/// descriptors, say) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the peer port: raft streams go to `raft`, every other connection
/// to `grpc`, until `shutdown` has stopped the gRPC server; dropping the
/// future ends every connection.
pub async fn serve(
    incoming: TlsIncoming,
    grpc: Router,
    raft: Arc<StreamReceiver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (to_grpc, grpc_incoming) = mpsc::channel(64);
    let grpc = grpc.serve_with_incoming_shutdown(ReceiverStream::new(grpc_incoming), shutdown);
    tokio::select! {
        served = grpc => served,
        never = accept(incoming, to_grpc, raft) => match never {},
    }
}

/// What a connection turned out to be.
enum Accepted {
    /// A raft stream: its preface is read.
    Raft(ServerStream),
    /// Anything else, its first bytes put back.
    Grpc(Rewound),
}

/// Accepts connections, tells them apart and serves the raft streams; never
/// returns (it is dropped with [`serve`]'s future).
async fn accept(
    mut incoming: TlsIncoming,
    to_grpc: mpsc::Sender<io::Result<Rewound>>,
    raft: Arc<StreamReceiver>,
) -> std::convert::Infallible {
    // Connections whose first bytes are awaited, then raft streams being
    // served: owned here, so that they end with this future.
    let mut sorting = JoinSet::new();
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(conn)) => {
                    sorting.spawn(sort(conn));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the peer port failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                // TlsIncoming never ends; if it did, nothing more comes.
                None => std::future::pending::<()>().await,
            },
            Some(sorted) = sorting.join_next() => match sorted {
                Ok(Some(Accepted::Raft(conn))) => {
                    let raft = Arc::clone(&raft);
                    let remote = conn.info().remote_addr;
                    streams.spawn(async move {
                        // A plain stream is read by the raft thread itself
                        // once accepted (it then lives as long as that
                        // thread does); a TLS one by this task.
                        let served = match conn.into_plain() {
                            Ok(tcp) => raft.serve_plain(tcp).await,
                            Err(conn) => raft.serve(conn).await,
                        };
                        if let Err(e) = served {
                            tracing::debug!(remote_addr = ?remote, error = %e, "a raft stream ended");
                        }
                    });
                }
                Ok(Some(Accepted::Grpc(conn))) => {
                    // tonic stopped taking connections once shut down: the
                    // connection is dropped with the send.
                    let _ = to_grpc.try_send(Ok(conn));
                }
                // Silent, closed, or its task was aborted.
                Ok(None) | Err(_) => {}
            },
            Some(_) = streams.join_next() => {}
        }
    }
}

/// Reads `conn`'s first bytes to tell what it is; `None` if it closed or
/// stayed silent.
async fn sort(mut conn: ServerStream) -> Option<Accepted> {
    let mut first = [0; PREFACE.len()];
    let mut read = 0;
    let sorted = tokio::time::timeout(FIRST_BYTES_TIMEOUT, async {
        while read < first.len() {
            let n = conn.read(&mut first[read..]).await?;
            if n == 0 {
                break;
            }
            // Not a raft stream as soon as a byte differs: hand it on
            // without waiting for more.
            if first[read..read + n] != PREFACE[read..read + n] {
                read += n;
                return Ok::<bool, io::Error>(false);
            }
            read += n;
        }
        Ok(read == PREFACE.len())
    })
    .await;
    match sorted {
        Ok(Ok(true)) => Some(Accepted::Raft(conn)),
        Ok(Ok(false)) if read > 0 => Some(Accepted::Grpc(Rewound {
            first: first[..read].to_vec(),
            at: 0,
            conn,
        })),
        _ => None,
    }
}

/// A connection whose first bytes were read, served again in front of the
/// rest.
#[derive(Debug)]
pub struct Rewound {
    /// The bytes read to sort the connection.
    first: Vec<u8>,
    /// How many of them were read again.
    at: usize,
    /// The connection.
    conn: ServerStream,
}

impl Connected for Rewound {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.conn.info().clone()
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.at);
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ::raft::eraftpb::{Message, MessageType};
    use cairn_proto::cairnpb::raft_client::RaftClient;
    use cairn_proto::cairnpb::Done;
    use cairn_tls::server::Security;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::raft::node::{inbox, InboxReceiver};
    use crate::raft::stream::tests::messages;
    use crate::raft::{stream, Dialer, Input, RaftService};

    /// How long any phase may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn heartbeat(term: u64) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgHeartbeat);
        msg.from = 2;
        msg.to = 1;
        msg.term = term;
        msg
    }

    /// The next `n` messages the raft thread gets, as its loop gets them
    /// (a plain stream handed over, then read by the thread), polled until
    /// [`DEADLINE`].
    async fn steps(raft: &mut InboxReceiver, n: usize) -> Vec<Message> {
        let deadline = Instant::now() + DEADLINE;
        let (mut round, mut steps) = (Vec::new(), Vec::new());
        while steps.len() < n {
            assert!(Instant::now() < deadline, "no message within {DEADLINE:?}");
            raft.recv_round(Duration::ZERO, 64, &mut round)
                .expect("the inputs' channel is open");
            for input in round.drain(..) {
                match input {
                    Input::Step(msg) => steps.push(msg),
                    Input::Stream(stream) => raft.add_stream(stream),
                    other => panic!("unexpected input {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        steps
    }

    #[tokio::test]
    async fn raft_streams_and_grpc_share_the_port_and_junk_harms_neither() {
        // Given a peer port serving raft's gRPC calls and raft streams.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (inputs, mut raft) = inbox().unwrap();
        let grpc = tonic::transport::Server::builder()
            .add_service(RaftService::new(inputs.clone()).into_server());
        let port = tokio::spawn(serve(
            TlsIncoming::new(listener, Security::Plain, "peer"),
            grpc,
            Arc::new(StreamReceiver::new(inputs)),
            std::future::pending(),
        ));

        // When junk arrives first: a connection closed at once, one closed
        // after a byte of the preface, and an HTTP/1 request.
        drop(TcpStream::connect(&url[7..]).await.unwrap());
        let mut cut = TcpStream::connect(&url[7..]).await.unwrap();
        cut.write_all(&PREFACE[..1]).await.unwrap();
        drop(cut);
        let mut http1 = TcpStream::connect(&url[7..]).await.unwrap();
        http1.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

        // Then a raft stream delivers its messages in order...
        let dialer = Dialer::default();
        let (mut writer, _) = tokio::time::timeout(DEADLINE, stream::open(&dialer, &url))
            .await
            .expect("the stream opens in time")
            .expect("the port accepts raft streams");
        writer
            .send(messages(&[heartbeat(1), heartbeat(2)]))
            .await
            .unwrap();
        writer.send(messages(&[heartbeat(3)])).await.unwrap();
        let expected: Vec<Message> = (1..=3).map(heartbeat).collect();
        assert_eq!(steps(&mut raft, 3).await, expected);

        // ...and a gRPC call on the same port is answered beside it.
        let channel = dialer.connect(&url).await.unwrap();
        let answered = tokio::time::timeout(DEADLINE, RaftClient::new(channel).probe(Done {}))
            .await
            .expect("the probe is answered in time");
        assert!(answered.is_ok(), "{answered:?}");

        // And the stream still works after it.
        writer.send(messages(&[heartbeat(4)])).await.unwrap();
        assert_eq!(steps(&mut raft, 1).await, vec![heartbeat(4)]);
        port.abort();
    }
}
