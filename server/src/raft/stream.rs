//! The raft stream: raft's messages from one member to another on a
//! connection of their own, each a length-prefixed `eraftpb.Message`.
//!
//! Why not a gRPC stream: a message on one crossed the sender's peer task,
//! hyper's body pipe and h2's connection task, then the same three on the
//! receiving side, each a hand-off between tasks (~80 µs each way on
//! loopback, traced under one client's puts: a third of a put's time).
//! Here one task writes a batch with one write, and one task reads it and
//! hands each message to the raft thread: etcd's rafthttp streams have the
//! same shape.
//!
//! The wire, on a connection to the peer port (plain or TLS, as the peer
//! URL says; the peer port tells it from HTTP/2 by its first bytes, see
//! `crate::peer::port`):
//!
//! ```text
//! dialer   -> PREFACE                           (14 bytes)
//! listener -> ACCEPTED                          (1 byte; nothing after it)
//! dialer   -> [len: u32 big-endian][eraftpb.Message: len bytes] ...
//! ```
//!
//! Only the dialer writes messages: a stream carries one direction, and
//! the answers come on the other member's own stream. Snapshots are not
//! sent here (they go on their own gRPC call, sealed, in chunks, so a large
//! one never sits in front of heartbeats).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::raft::eraftpb::Message;
use bytes::{Buf, BytesMut};
use cairn_tls::client::ClientStream;
use protobuf::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::dialer::{DialError, Dialer};
use super::node::{Inbox, Input};
use crate::locks::lock;
use crate::metrics::network::NetworkMetrics;

/// What a dialer sends first. Its first byte is neither a TLS handshake's
/// (0x16) nor HTTP/2's preface's (`P`), so the peer port can tell them apart.
pub const PREFACE: &[u8; 14] = b"CAIRN-RAFT/1\r\n";
/// The listener's answer to [`PREFACE`]: the stream is open. Not a byte an
/// HTTP/2 server starts with (a frame's length, 0x00), so a peer that does
/// not know raft streams is told apart from one that does.
pub const ACCEPTED: u8 = b'+';
/// Largest message a member accepts on a stream.
pub const MAX_FRAME: usize = super::transport::MAX_PEER_MESSAGE;
/// How long the dialer waits for [`ACCEPTED`], and for a batch to be
/// written: a peer that takes longer is treated as gone (the connection is
/// dropped and dialed again), as h2's keep-alive timeout did for the gRPC
/// stream; raft retransmits whatever was lost.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream failed (the sender reconnects; the receiver drops it).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The peer could not be connected to.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Reading or writing failed, or the peer closed the stream.
    #[error("raft stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer answered the preface with something else: not a member
    /// that speaks raft streams (another server, or an older Cairn).
    #[error("the peer does not accept raft streams (answered {0:#04x})")]
    Refused(u8),
    /// The peer took longer than [`STALL_TIMEOUT`].
    #[error("the peer stalled for {STALL_TIMEOUT:?}")]
    Stalled,
    /// A frame longer than [`MAX_FRAME`].
    #[error("a raft message of {0} bytes, over the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// A frame that is not a raft message.
    #[error("bad raft message: {0}")]
    Decode(#[from] protobuf::ProtobufError),
    /// The raft thread is gone (the member is stopping).
    #[error("the raft thread has stopped")]
    Stopped,
}

/// What a stream's writer writes: a message, or frames encoded already
/// (the rest of a batch the raft thread began writing itself, see
/// `super::transport`).
#[derive(Debug)]
pub enum Outgoing {
    /// A message, encoded as a frame when written.
    Message(Message),
    /// Whole or partial frames, written as they are.
    Encoded(Vec<u8>),
}

/// Appends `messages` to `buf` as frames; the bytes of raft messages
/// encoded (without the length prefixes). A message that does not encode
/// is logged and left out (raft retransmits).
pub fn encode_frames(buf: &mut Vec<u8>, messages: impl IntoIterator<Item = Message>) -> u64 {
    let mut encoded = 0;
    for msg in messages {
        let start = buf.len();
        buf.extend_from_slice(&[0; 4]);
        if let Err(e) = msg.write_to_vec(buf) {
            tracing::error!(error = %e, "cannot encode a raft message");
            buf.truncate(start);
            continue;
        }
        let len = buf.len() - start - 4;
        let Ok(prefix) = u32::try_from(len) else {
            tracing::error!(bytes = len, "a raft message too large to send");
            buf.truncate(start);
            continue;
        };
        buf[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
        encoded += len as u64;
    }
    encoded
}

/// Any connection a stream is written on (TLS, or [`SharedTcp`]).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A plain TCP connection that the peer's task and the raft thread both
/// write to, never at once (`super::transport` decides whose turn it is):
/// tokio's `try_write` needs only a shared reference, and so does this
/// task's side of it.
#[derive(Debug)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection closes when the last of its owners drops it.
        Poll::Ready(Ok(()))
    }
}

/// The sending end of a raft stream.
pub struct StreamWriter<S> {
    /// The connection.
    io: S,
    /// A batch's frames, encoded together so that a batch is one write;
    /// kept between batches for its allocation.
    buf: Vec<u8>,
}

/// Dials `url` and opens a raft stream on the connection; on a plain TCP
/// connection, the connection too, for the raft thread to write to.
pub async fn open(
    dialer: &Dialer,
    url: &str,
) -> Result<(StreamWriter<Box<dyn Io>>, Option<Arc<TcpStream>>), StreamError> {
    match dialer.connect_stream(url).await? {
        ClientStream::Plain(tcp) => {
            let tcp = Arc::new(tcp);
            let io: Box<dyn Io> = Box::new(SharedTcp(Arc::clone(&tcp)));
            Ok((StreamWriter::start(io).await?, Some(tcp)))
        }
        tls => {
            let io: Box<dyn Io> = Box::new(tls);
            Ok((StreamWriter::start(io).await?, None))
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamWriter<S> {
    /// Sends the preface on `io` and waits for the peer to accept it.
    pub async fn start(mut io: S) -> Result<Self, StreamError> {
        let answer = tokio::time::timeout(STALL_TIMEOUT, async {
            io.write_all(PREFACE).await?;
            io.flush().await?;
            io.read_u8().await
        })
        .await
        .map_err(|_| StreamError::Stalled)??;
        if answer != ACCEPTED {
            return Err(StreamError::Refused(answer));
        }
        Ok(StreamWriter {
            io,
            buf: Vec::new(),
        })
    }

    /// Writes `items` as one batch; the bytes of the messages among them
    /// (without the length prefixes; frames encoded already were counted
    /// where they were). A message that does not encode is logged and left
    /// out (raft retransmits).
    pub async fn send(
        &mut self,
        items: impl IntoIterator<Item = Outgoing>,
    ) -> Result<u64, StreamError> {
        self.buf.clear();
        let mut sent = 0;
        for item in items {
            match item {
                Outgoing::Message(msg) => sent += encode_frames(&mut self.buf, [msg]),
                Outgoing::Encoded(bytes) => self.buf.extend_from_slice(&bytes),
            }
        }
        if self.buf.is_empty() {
            return Ok(0);
        }
        tokio::time::timeout(STALL_TIMEOUT, async {
            self.io.write_all(&self.buf).await?;
            self.io.flush().await
        })
        .await
        .map_err(|_| StreamError::Stalled)??;
        // A burst (a snapshot's catch-up, a large entry) must not keep its
        // buffer for the life of the stream.
        if self.buf.capacity() > 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(sent)
    }
}

/// The receiving side of raft streams: every stream's messages go to the
/// raft thread.
pub struct StreamReceiver {
    /// The raft thread's inputs.
    inputs: Mutex<Inbox>,
    /// Bytes and failures received (none in unit tests).
    metrics: Option<Arc<NetworkMetrics>>,
}

impl StreamReceiver {
    /// A receiver feeding `inputs`.
    pub fn new(inputs: Inbox) -> Self {
        Self {
            inputs: Mutex::new(inputs),
            metrics: None,
        }
    }

    /// The same receiver, counting what it receives in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<NetworkMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves one stream whose [`PREFACE`] has been read: accepts it, then
    /// hands its messages to the raft thread until the peer closes it.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: S,
    ) -> Result<(), StreamError> {
        io.write_all(&[ACCEPTED]).await?;
        io.flush().await?;
        let inputs = lock(&self.inputs).clone();
        let mut frames = Frames::new(self.metrics.clone());
        loop {
            frames.decode(|msg| {
                inputs
                    .send(Input::Step(msg))
                    .map_err(|_| StreamError::Stopped)
            })?;
            if io.read_buf(&mut frames.buf).await? == 0 {
                return frames.closed();
            }
        }
    }

    /// Serves one stream on plain TCP whose [`PREFACE`] has been read:
    /// accepts it, then hands the connection to the raft thread, which
    /// reads its messages itself (`super::node::inbox`).
    pub async fn serve_plain(&self, mut tcp: TcpStream) -> Result<(), StreamError> {
        tcp.write_all(&[ACCEPTED]).await?;
        tcp.flush().await?;
        let stream = Inbound {
            tcp: tcp.into_std()?,
            frames: Frames::new(self.metrics.clone()),
        };
        lock(&self.inputs)
            .send(Input::Stream(stream))
            .map_err(|_| StreamError::Stopped)
    }
}

/// A raft stream on plain TCP, read by the raft thread itself.
#[derive(Debug)]
pub struct Inbound {
    /// The connection (non-blocking).
    pub(crate) tcp: std::net::TcpStream,
    /// What has arrived on it.
    pub(crate) frames: Frames,
}

/// The messages arriving on one stream: the bytes read and not yet decoded,
/// and the counters of what was received.
#[derive(Debug)]
pub struct Frames {
    /// Bytes read, up to a partial frame.
    pub(crate) buf: BytesMut,
    /// etcd_network_peer_received_* (none in unit tests).
    metrics: Option<Arc<NetworkMetrics>>,
    /// The sender's counter, looked up once it is known (every message of
    /// a stream comes from the same member).
    received: Option<(u64, prometheus::IntCounter)>,
}

impl Frames {
    /// Nothing received yet.
    pub(crate) fn new(metrics: Option<Arc<NetworkMetrics>>) -> Self {
        Frames {
            buf: BytesMut::with_capacity(64 * 1024),
            metrics,
            received: None,
        }
    }

    /// Hands every whole message in [`Frames::buf`] to `each`, in order; a
    /// frame that is not a message ends the stream.
    pub(crate) fn decode(
        &mut self,
        mut each: impl FnMut(Message) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        while let Some(frame) = next_frame(&mut self.buf)? {
            let msg = match Message::parse_from_bytes(&frame) {
                Ok(msg) => msg,
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.receive_failed(self.received.as_ref().map_or(0, |(from, _)| *from));
                    }
                    return Err(e.into());
                }
            };
            if let Some(m) = &self.metrics {
                if self
                    .received
                    .as_ref()
                    .is_none_or(|(from, _)| *from != msg.from)
                {
                    self.received = Some((msg.from, m.received_from(msg.from)));
                }
                if let Some((_, counter)) = &self.received {
                    counter.inc_by(frame.len() as u64);
                }
            }
            each(msg)?;
        }
        Ok(())
    }

    /// How the stream ended when the peer closed it: well between frames,
    /// cut short within one.
    pub(crate) fn closed(&self) -> Result<(), StreamError> {
        match self.buf.is_empty() {
            true => Ok(()),
            false => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        }
    }
}

/// The next whole frame's message bytes in `buf` (taken out of it), if
/// one is there; room is reserved for the rest of a partial one.
fn next_frame(buf: &mut BytesMut) -> Result<Option<BytesMut>, StreamError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let mut len = [0; 4];
    len.copy_from_slice(prefix);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(StreamError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len)))
}

#[cfg(test)]
pub(crate) mod tests {
    use ::raft::eraftpb::{Entry, MessageType};

    use super::*;

    fn append(index: u64, data: &[u8]) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        msg.from = 2;
        msg.to = 1;
        msg.index = index;
        msg.set_entries(protobuf::RepeatedField::from_vec(vec![Entry {
            index: index + 1,
            data: data.to_vec().into(),
            ..Default::default()
        }]));
        msg
    }

    /// `sent` as what a writer writes.
    pub(crate) fn messages(sent: &[Message]) -> Vec<Outgoing> {
        sent.iter().cloned().map(Outgoing::Message).collect()
    }

    /// A stream from a writer to a receiver over an in-memory pipe: the
    /// receiver's task and the raft thread's end.
    async fn pipe() -> (
        StreamWriter<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<Result<(), StreamError>>,
        crate::raft::node::InboxReceiver,
    ) {
        let (dialer, listener) = tokio::io::duplex(1024);
        let (inputs, raft) = crate::raft::node::inbox().unwrap();
        let receiving = tokio::spawn(async move {
            let mut listener = listener;
            let mut preface = [0; PREFACE.len()];
            listener.read_exact(&mut preface).await?;
            assert_eq!(&preface, PREFACE);
            StreamReceiver::new(inputs).serve(listener).await
        });
        let writer = StreamWriter::start(dialer).await.unwrap();
        (writer, receiving, raft)
    }

    fn stepped(raft: &crate::raft::node::InboxReceiver) -> Vec<Message> {
        raft.try_iter()
            .map(|input| match input {
                Input::Step(msg) => msg,
                other => panic!("unexpected input {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn batches_arrive_whole_and_in_order() {
        let (mut writer, receiving, raft) = pipe().await;
        // Messages larger than the pipe's buffer arrive in pieces.
        let sent: Vec<Message> = (0..20)
            .map(|i| append(i, &vec![i as u8; 300 * i as usize]))
            .collect();
        let bytes = writer.send(messages(&sent[..7])).await.unwrap();
        assert_eq!(
            bytes,
            sent[..7]
                .iter()
                .map(|m| m.compute_size() as u64)
                .sum::<u64>()
        );
        writer.send(messages(&sent[7..])).await.unwrap();
        writer.send(messages(&[])).await.unwrap();
        drop(writer);
        receiving.await.unwrap().unwrap();
        assert_eq!(stepped(&raft), sent);
    }

    #[tokio::test]
    async fn a_cut_frame_an_oversized_one_and_garbage_end_the_stream() {
        // A frame cut short by the peer closing: an error, and the whole
        // messages before it were delivered.
        let (mut writer, receiving, raft) = pipe().await;
        writer.send(messages(&[append(1, b"whole")])).await.unwrap();
        let mut io = writer.io;
        io.write_all(&[0, 0, 0, 50, 1, 2, 3]).await.unwrap();
        drop(io);
        assert!(matches!(
            receiving.await.unwrap(),
            Err(StreamError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
        assert_eq!(stepped(&raft), vec![append(1, b"whole")]);

        // A length over the limit: refused before reading it.
        let (writer, receiving, _raft) = pipe().await;
        let mut io = writer.io;
        let len = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        io.write_all(&len).await.unwrap();
        assert!(matches!(
            receiving.await.unwrap(),
            Err(StreamError::TooLarge(n)) if n == MAX_FRAME + 1
        ));

        // Bytes that are not a raft message.
        let (writer, receiving, raft) = pipe().await;
        let mut io = writer.io;
        io.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            receiving.await.unwrap(),
            Err(StreamError::Decode(_))
        ));
        assert!(stepped(&raft).is_empty());
    }

    #[tokio::test]
    async fn a_peer_that_answers_otherwise_is_refused() {
        let (dialer, mut listener) = tokio::io::duplex(1024);
        let answering = tokio::spawn(async move {
            let mut preface = [0; PREFACE.len()];
            listener.read_exact(&mut preface).await.unwrap();
            // An HTTP/2 server's first frame starts with its length.
            listener.write_all(&[0, 0, 18, 4]).await.unwrap();
            listener
        });
        assert!(matches!(
            StreamWriter::start(dialer).await,
            Err(StreamError::Refused(0))
        ));
        drop(answering.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_a_stalled_one() {
        let (dialer, _listener) = tokio::io::duplex(1024);
        assert!(matches!(
            StreamWriter::start(dialer).await,
            Err(StreamError::Stalled)
        ));
    }
}
