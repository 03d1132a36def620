//! A read half that reads ahead while its peer is sending a lot, and holds no buffer of
//! its own while it is not.
//!
//! tungstenite reads at most its read buffer's size at a time, and that buffer is kept
//! small (1 KiB, `ws::socket_config`) because it is most of an idle connection's memory.
//! A publisher that pipelines its frames then costs a `recv` for every two or three
//! frames: 39,000 a second under the ingest benchmark, about a fifteenth of the hub's
//! core. So when a read fills the whole of what tungstenite asked for, more is likely
//! waiting, and the next reads go through a [`READ_AHEAD`] buffer, from which tungstenite's
//! small reads are then served without a system call. The buffer is dropped once it is
//! drained after a read that did not need it (the peer has gone quiet), so an idle
//! connection keeps nothing but this struct.
//!
//! It owns no policy about frames: it hands on bytes in the order they came.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// How much one read takes while the peer is busy: about 36 of the load generator's
/// publish frames.
pub const READ_AHEAD: usize = 16 * 1024;

/// `inner`, read ahead while reads keep filling what the caller asked for.
pub struct ReadAhead<R> {
    inner: R,
    /// Bytes read and not yet handed on (`ahead[start..]`); empty, and unallocated, while
    /// the peer is quiet.
    ahead: Vec<u8>,
    start: usize,
    /// Whether the last read from `inner` filled what it was given: the next read goes
    /// through `ahead`.
    busy: bool,
}

impl<R> ReadAhead<R> {
    pub fn new(inner: R) -> ReadAhead<R> {
        ReadAhead {
            inner,
            ahead: Vec::new(),
            start: 0,
            busy: false,
        }
    }

    /// The bytes of its own it holds now (0 while the peer is quiet).
    pub fn buffered_capacity(&self) -> usize {
        self.ahead.capacity()
    }

    /// Hands on what `ahead` holds, as much as `out` takes; frees `ahead` once it is
    /// drained and the peer has gone quiet.
    fn hand_on(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.ahead.len() - self.start);
        out.put_slice(&self.ahead[self.start..self.start + n]);
        self.start += n;
        if self.start == self.ahead.len() {
            self.start = 0;
            if self.busy {
                self.ahead.clear();
            } else {
                self.ahead = Vec::new();
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadAhead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.ahead.len() {
            this.hand_on(out);
            return Poll::Ready(Ok(()));
        }
        let asked = out.remaining();
        if !this.busy {
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            this.busy = asked > 0 && out.filled().len() - before == asked;
            return Poll::Ready(Ok(()));
        }
        this.ahead.resize(READ_AHEAD, 0);
        let mut into = ReadBuf::new(&mut this.ahead);
        let read = Pin::new(&mut this.inner).poll_read(cx, &mut into);
        let got = into.filled().len();
        this.ahead.truncate(got);
        if read.is_pending() {
            // Nothing more yet: the peer has paused, so the buffer goes until it sends
            // enough again.
            this.ahead = Vec::new();
            this.busy = false;
            return Poll::Pending;
        }
        ready!(read)?;
        // Reading ahead paid off only if it took more than the caller would have.
        this.busy = got > asked;
        this.hand_on(out);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A small read that fills its buffer switches to reading ahead: the peer's bytes come
    /// through in order and whole, the buffer is used while they flow, and it is freed
    /// once the peer goes quiet.
    #[tokio::test]
    async fn reads_ahead_while_the_peer_sends_and_frees_the_buffer_when_it_stops() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = ReadAhead::new(ours);
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();

        let mut got = Vec::new();
        let mut small = [0u8; 1024];
        let mut used_ahead = false;
        while got.len() < sent.len() {
            let n = reader.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
            used_ahead |= reader.buffered_capacity() >= READ_AHEAD;
        }
        assert_eq!(got, sent, "every byte, in order");
        assert!(used_ahead, "a busy peer is read ahead");

        // Quiet now: nothing is held while waiting, a short message is read directly, and
        // nothing is held after it.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.read(&mut small),
        );
        assert!(waiting.await.is_err(), "nothing more was sent");
        assert_eq!(
            reader.buffered_capacity(),
            0,
            "a waiting reader holds no buffer"
        );
        peer.write_all(b"ping").await.unwrap();
        let n = reader.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"ping");
        assert_eq!(
            reader.buffered_capacity(),
            0,
            "an idle reader holds no buffer"
        );
        let n = {
            peer.write_all(b"pong").await.unwrap();
            reader.read(&mut small).await.unwrap()
        };
        assert_eq!(&small[..n], b"pong");
        assert_eq!(reader.buffered_capacity(), 0);

        drop(peer);
        assert_eq!(reader.read(&mut small).await.unwrap(), 0, "end of stream");
    }
}
