//! Accepting the `:authority` etcdctl 3.4 sends.
//!
//! etcdctl 3.4 (Debian's and Ubuntu's etcdctl) dials a maintenance client
//! with the endpoint exactly as written, so `--endpoints=http://host:port`
//! becomes the HTTP/2 `:authority` `http://host:port` of `endpoint status`,
//! `endpoint hashkv`, `defrag` and every `--cluster` command. grpc-go (so
//! etcd) takes any authority; the `h2` crate under tonic refuses it and
//! resets the stream with PROTOCOL_ERROR. The server never uses the
//! authority, so this shim, between the socket and HTTP/2, rewrites such an
//! authority to its `host:port`.
//!
//! It reads what the client sends: the connection preface, then frames. The
//! first header block of the connection is decoded (HPACK). grpc-go sends
//! one authority per connection, so if that one is fine, the rest of the
//! connection passes through untouched and undecoded (every other client:
//! one decode per connection). Otherwise every header block from then on is
//! decoded and re-encoded as literals without indexing (so the server's
//! HPACK table is never used and cannot drift from the client's), with the
//! authority rewritten. Anything that is not HTTP/2 with prior knowledge
//! passes through as it came. Writes are never touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const FRAME_HEADER: usize = 9;
/// Frame types and flags (RFC 9113).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload a peer must accept (SETTINGS_MAX_FRAME_SIZE's
/// initial value): re-encoded blocks are split to fit it.
const MAX_FRAME: usize = 16_384;
/// Bytes read from the socket at a time while frames are inspected.
const READ_CHUNK: usize = 16 * 1024;

/// What the shim does with the bytes it reads.
enum Mode {
    /// Checking the connection preface (`seen` bytes of it so far).
    Preface { seen: usize },
    /// Waiting for the first header block, to look at its authority.
    FirstBlock,
    /// Rewriting every header block.
    Rewrite,
    /// Passing everything through.
    Passthrough,
}

/// A header block being assembled from HEADERS + CONTINUATION frames.
struct Block {
    /// The stream it belongs to.
    stream: u32,
    /// The HEADERS frame's END_STREAM flag.
    end_stream: bool,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    /// The header block fragments, concatenated.
    fragment: Vec<u8>,
    /// The frames exactly as received (sent as they are if the block needs
    /// no rewriting).
    raw: Vec<u8>,
}

/// A client connection whose incoming HTTP/2 authority is made acceptable.
pub struct FixAuthority<IO> {
    /// The connection.
    io: IO,
    mode: Mode,
    /// Bytes read from `io`, not yet inspected.
    input: BytesMut,
    /// Bytes inspected, ready for the reader.
    output: BytesMut,
    /// The client's HPACK state, while blocks are decoded.
    decoder: Option<loona_hpack::Decoder<'static>>,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
}

impl<IO> FixAuthority<IO> {
    /// Wraps an accepted connection.
    pub fn new(io: IO) -> Self {
        Self {
            io,
            mode: Mode::Preface { seen: 0 },
            input: BytesMut::new(),
            output: BytesMut::new(),
            decoder: Some(loona_hpack::Decoder::new()),
            block: None,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                Mode::Preface { seen } => {
                    let take = (PREFACE.len() - seen).min(self.input.len());
                    if self.input[..take] != PREFACE[seen..seen + take] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    let part = self.input.split_to(take);
                    self.output.unsplit(part);
                    let seen = seen + take;
                    if seen < PREFACE.len() {
                        self.mode = Mode::Preface { seen };
                        return Ok(());
                    }
                    self.mode = Mode::FirstBlock;
                }
                Mode::FirstBlock | Mode::Rewrite => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    if self.input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    self.frame(&frame)?;
                }
            }
        }
    }

    /// Handles one whole frame in the FirstBlock or Rewrite mode.
    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*body.first().ok_or_else(malformed)?);
                    body = &body[1..];
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    let fields: [u8; 5] = body
                        .get(..5)
                        .ok_or_else(malformed)?
                        .try_into()
                        .map_err(|_| malformed())?;
                    priority = Some(fields);
                    body = &body[5..];
                }
                let fragment = body
                    .get(..body.len().checked_sub(pad).ok_or_else(malformed)?)
                    .ok_or_else(malformed)?;
                self.block = Some(Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fragment: fragment.to_vec(),
                    raw: frame.to_vec(),
                });
            }
            CONTINUATION => match self.block.as_mut() {
                Some(block) => {
                    block.fragment.extend_from_slice(payload);
                    block.raw.extend_from_slice(frame);
                }
                // Not ours to judge: the server will refuse it.
                None => {
                    self.output.put_slice(frame);
                    return Ok(());
                }
            },
            _ => {
                self.output.put_slice(frame);
                return Ok(());
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.finish(block)?;
            }
        }
        Ok(())
    }

    /// A complete header block: sent as it came, or rewritten.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let Some(decoder) = self.decoder.as_mut() else {
            self.output.put_slice(&block.raw);
            return Ok(());
        };
        let headers = decoder.decode(&block.fragment).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("undecodable HTTP/2 headers: {e:?}"),
            )
        })?;
        let fixed = headers
            .iter()
            .any(|(name, value)| name == b":authority" && fixed_authority(value).is_some());
        if matches!(self.mode, Mode::FirstBlock) && !fixed {
            // The usual case: nothing to fix on this connection.
            self.output.put_slice(&block.raw);
            self.mode = Mode::Passthrough;
            self.decoder = None;
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::new();
        for (name, value) in &headers {
            let value = match fixed_authority(value) {
                Some(host_port) if name == b":authority" => host_port,
                _ => value.as_slice(),
            };
            literal_without_indexing(&mut encoded, name, value);
        }
        self.write_block(&block, &encoded);
        Ok(())
    }

    /// Frames a re-encoded header block: HEADERS, then CONTINUATIONs.
    fn write_block(&mut self, block: &Block, encoded: &[u8]) {
        let first_room = MAX_FRAME - if block.priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if block.priority.is_some() {
            flags |= PRIORITY;
        }
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let priority = block.priority.map(|p| p.to_vec()).unwrap_or_default();
        self.put_frame(HEADERS, flags, block.stream, &[&priority, first]);
        while !rest.is_empty() {
            let (part, remaining) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = remaining;
            let flags = if rest.is_empty() { END_HEADERS } else { 0 };
            self.put_frame(CONTINUATION, flags, block.stream, &[part]);
        }
    }

    fn put_frame(&mut self, kind: u8, flags: u8, stream: u32, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.output.put_slice(&(len as u32).to_be_bytes()[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream);
        for part in parts {
            self.output.put_slice(part);
        }
    }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 HEADERS frame")
}

/// The `host:port` of an authority written as a URL (`http://host:port`,
/// maybe with a path), or `None` when it is a plain authority already.
fn fixed_authority(value: &[u8]) -> Option<&[u8]> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let rest = &value[at + 3..];
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    (end > 0).then_some(&rest[..end])
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// "Literal Header Field without Indexing — New Name", no Huffman coding
/// (RFC 7541, 6.2.2): touches no HPACK table.
fn literal_without_indexing(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

impl<IO: AsyncRead + Unpin> AsyncRead for FixAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.input.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // End of input: whatever is left goes as it is.
                    let rest = this.input.split();
                    this.output.unsplit(rest);
                    if let Some(block) = this.block.take() {
                        this.output.put_slice(&block.raw);
                    }
                    if this.output.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.mode = Mode::Passthrough;
                }
                Poll::Ready(Ok(())) => {
                    this.input.put_slice(read.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FixAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for FixAuthority<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    /// What the server reads after the shim, given what the client sent.
    async fn through(sent: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut shim = FixAuthority::new(server);
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        shim.read_to_end(&mut got).await.unwrap();
        got
    }

    fn headers_of(block_frames: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut fragment = Vec::new();
        let mut rest = block_frames;
        while !rest.is_empty() {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let mut payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS && flags & PRIORITY != 0 {
                payload = &payload[5..];
            }
            fragment.extend_from_slice(payload);
            rest = &rest[FRAME_HEADER + len..];
        }
        decoder.decode(&fragment).unwrap()
    }

    fn request(authority: &[u8], encoder: &mut loona_hpack::Encoder<'_>) -> Vec<u8> {
        encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
        ])
    }

    #[tokio::test]
    async fn a_url_authority_is_rewritten_on_every_block() {
        let mut encoder = loona_hpack::Encoder::new();
        let settings = frame(0x4, 0, 0, &[]);
        let first = frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(b"http://127.0.0.1:2379", &mut encoder),
        );
        let data = frame(0x0, END_STREAM, 1, b"\0\0\0\0\0");
        // The second request leans on the client's HPACK table.
        let second = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &request(b"http://127.0.0.1:2379", &mut encoder),
        );
        let sent = [PREFACE, &settings, &first, &data, &second].concat();
        let got = through(sent).await;
        assert!(got.starts_with(PREFACE));
        let rest = &got[PREFACE.len()..];
        assert_eq!(&rest[..settings.len()], &settings[..]);
        let rest = &rest[settings.len()..];
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (first_out, rest) = rest.split_at(FRAME_HEADER + len);
        let authority = |frames: &[u8]| {
            headers_of(frames)
                .into_iter()
                .find(|(n, _)| n == b":authority")
                .unwrap()
                .1
        };
        assert_eq!(authority(first_out), b"127.0.0.1:2379");
        assert_eq!(&rest[..data.len()], &data[..]);
        let second_out = &rest[data.len()..];
        assert_eq!(second_out[4], END_HEADERS | END_STREAM);
        assert_eq!(authority(second_out), b"127.0.0.1:2379");
        assert_eq!(headers_of(second_out).len(), 5);
    }

    #[tokio::test]
    async fn a_plain_authority_passes_untouched() {
        let mut encoder = loona_hpack::Encoder::new();
        let first = frame(
            HEADERS,
            END_HEADERS,
            1,
            &request(b"127.0.0.1:2379", &mut encoder),
        );
        let second = frame(
            HEADERS,
            END_HEADERS,
            3,
            &request(b"http://late:1", &mut encoder),
        );
        let sent = [PREFACE, &first, &second].concat();
        // Only the first block of a connection is looked at.
        assert_eq!(through(sent.clone()).await, sent);
        // Not HTTP/2: not touched either.
        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(http1.clone()).await, http1);
    }

    #[tokio::test]
    async fn continuation_padding_and_priority_are_handled() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = request(b"http://h:1/x", &mut encoder);
        let (a, b) = block.split_at(10);
        let mut padded = vec![3u8];
        padded.extend([0x80, 0, 0, 1, 16]);
        padded.extend(a);
        padded.extend([0, 0, 0]);
        let first = frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &padded);
        let cont = frame(CONTINUATION, END_HEADERS, 5, b);
        let got = through([PREFACE, &first, &cont].concat()).await;
        let out = &got[PREFACE.len()..];
        assert_eq!(out[4], PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&out[FRAME_HEADER..FRAME_HEADER + 5], &[0x80, 0, 0, 1, 16]);
        let headers = headers_of(out);
        assert!(headers.contains(&(b":authority".to_vec(), b"h:1".to_vec())));
        assert!(headers.contains(&(
            b":path".to_vec(),
            b"/etcdserverpb.Maintenance/Status".to_vec()
        )));
    }

    #[test]
    fn authorities() {
        assert_eq!(
            fixed_authority(b"http://127.0.0.1:2379"),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(
            fixed_authority(b"https://[::1]:2379/"),
            Some(&b"[::1]:2379"[..])
        );
        assert_eq!(fixed_authority(b"127.0.0.1:2379"), None);
        assert_eq!(fixed_authority(b"http://"), None);
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 7, 300);
        assert_eq!(out, [127, 173, 1]);
    }
}
