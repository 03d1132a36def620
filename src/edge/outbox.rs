//! A connection's outbox: the bytes waiting for its socket, and the one place that writes
//! them.
//!
//! Everything a connection sends passes through its outbox, in the order it was queued:
//! events from the fan-out (WebSocket frames encoded once and shared by every receiver),
//! the connection's own replies, and the control frames tungstenite writes (pongs, pings,
//! close). Whoever queues may also write, and a write never waits:
//!
//! - the pipeline thread queues a pass's events to every receiver and then writes each
//!   receiver's queue in one vectored write, without waking the connection's task; under
//!   load a pass is larger, so one write carries more frames (see docs/benchmarks.md);
//! - the connection's task writes its own replies right after queueing them.
//!
//! A socket that takes less than it is offered leaves the rest queued and marks the outbox
//! *blocked*; from then until the queue is empty only the connection's task writes, woken by
//! the socket when it drains. (Only the task polls with a waker that matters; a write from
//! another thread polls with a no-op waker, which must not replace the task's.)
//!
//! The queue is bounded in frames, control frames included. Queueing past the bound is the
//! slow-consumer case: the caller closes the connection with 4008 (for tungstenite's own
//! frames, the outbox tells the task to); only the close frame goes past it. This module
//! never blocks and holds its lock only for non-blocking writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Frames offered to one vectored write at most.
const WRITE_BATCH: usize = 128;

/// Whether an unmasked frame is a close frame (opcode 8, RFC 6455 5.2).
fn is_close(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x0f == 0x8)
}

/// The write half of a connection's socket.
pub type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its bound of frames: a slow consumer.
    Full,
    /// The connection is ending (its socket failed, or it was told to close).
    Gone,
}

/// What ends a connection, as its outbox reports it to the task.
#[derive(Debug, PartialEq, Eq)]
pub enum Trouble {
    /// Told to close with this code (4008 for a slow consumer).
    Kill(u16),
    /// A write failed: the peer is gone.
    Failed,
}

/// One connection's outbound queue and socket write half.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Most frames queued at once; see the module docs for what happens past it.
    capacity: usize,
}

struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written; a frame is never cut short on the wire.
    written: usize,
    sink: Sink,
    /// A write was refused for want of room; only the task writes until the queue empties.
    blocked: bool,
    /// A write failed; nothing more is written.
    failed: bool,
    /// The close code the connection was told to close with.
    kill: Option<u16>,
    /// The connection's task, woken when it must write (blocked) or end (kill, failure).
    task: Option<Waker>,
    /// Writes that the socket took after it had refused bytes: each is a sign that the
    /// peer reads, however much is still queued for it.
    drained: u64,
    /// The task waits for the queue to shrink to this many frames (a paced replay); a
    /// write that makes the room wakes it.
    room_wanted: Option<usize>,
    /// Observes how many frames each write completed (`frames_per_write`), when set: one
    /// observation per socket write, never per frame.
    write_sizes: Option<Histogram>,
}

impl Outbox {
    pub fn new(sink: Sink, capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                written: 0,
                sink,
                blocked: false,
                failed: false,
                kill: None,
                task: None,
                drained: 0,
                room_wanted: None,
                write_sizes: None,
            }),
            capacity,
        }
    }

    /// Counts the frames each socket write completes into `histogram`.
    pub fn counting_writes(self, histogram: Histogram) -> Outbox {
        self.queue.lock().write_sizes = Some(histogram);
        self
    }

    /// Queues a frame without writing it; the caller writes with [`Outbox::flush`] (or the
    /// task with [`Outbox::poll_write`]).
    pub fn push(&self, frame: Bytes) -> Result<(), Refused> {
        let mut q = self.queue.lock();
        if q.failed || q.kill.is_some() {
            return Err(Refused::Gone);
        }
        if q.frames.len() >= self.capacity {
            return Err(Refused::Full);
        }
        q.frames.push_back(frame);
        Ok(())
    }

    /// Queues frames and writes what the socket takes now.
    pub fn send(&self, frames: impl IntoIterator<Item = Bytes>) -> Result<(), Refused> {
        for frame in frames {
            self.push(frame)?;
        }
        self.flush();
        Ok(())
    }

    /// Writes what the socket takes now, from any thread; never waits. Leaves the writing
    /// to the task when the outbox is blocked.
    pub fn flush(&self) {
        let mut q = self.queue.lock();
        if q.blocked || q.failed || q.frames.is_empty() {
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if q.write(&mut cx).is_pending() {
            // The socket registered the no-op waker; the task's next poll replaces it.
            q.wake_task();
        }
    }

    /// Tells the connection to close with `code`; its task sees it at its next poll.
    pub fn kill(&self, code: u16) {
        let mut q = self.queue.lock();
        q.kill.get_or_insert(code);
        q.wake_task();
    }

    /// Drops the frames not yet begun, as a slow consumer's close does: the close frame
    /// should not wait behind them. A frame partly written is kept, to be finished.
    pub fn discard(&self) {
        let mut q = self.queue.lock();
        let keep = usize::from(q.written > 0);
        q.frames.truncate(keep);
    }

    /// For the task: writes until the queue is empty (`Ready(Ok)`) or the socket is full
    /// (`Pending`, woken when it drains). Fails once a write has failed.
    pub fn poll_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut q = self.queue.lock();
        q.register(cx);
        q.write(cx)
    }

    /// For the task's main loop: completes when the connection must end; meanwhile writes
    /// whatever is queued whenever the socket has room.
    pub fn poll_trouble(&self, cx: &mut Context<'_>) -> Poll<Trouble> {
        let mut q = self.queue.lock();
        q.register(cx);
        if let Some(code) = q.kill {
            return Poll::Ready(Trouble::Kill(code));
        }
        match q.write(cx) {
            Poll::Ready(Err(_)) => Poll::Ready(Trouble::Failed),
            _ => Poll::Pending,
        }
    }

    /// For the task: completes when `frames` more frames fit under the bound, and is woken
    /// by the write that makes the room. Never completes for a connection that is ending:
    /// its [`Outbox::poll_trouble`] does.
    pub fn poll_room(&self, cx: &mut Context<'_>, frames: usize) -> Poll<()> {
        let mut q = self.queue.lock();
        let limit = self.capacity.saturating_sub(frames);
        if q.failed || q.kill.is_some() || q.frames.len() > limit {
            q.register(cx);
            q.room_wanted = Some(limit);
            return Poll::Pending;
        }
        q.room_wanted = None;
        Poll::Ready(())
    }

    /// Frames queued and not yet fully written.
    pub fn queued(&self) -> usize {
        self.queue.lock().frames.len()
    }

    /// How many times the socket has taken bytes after refusing some: a count that moves
    /// while the peer reads what was waiting for it.
    pub fn drained(&self) -> u64 {
        self.queue.lock().drained
    }
}

impl Queue {
    fn register(&mut self, cx: &Context<'_>) {
        match &self.task {
            Some(task) if task.will_wake(cx.waker()) => {}
            _ => self.task = Some(cx.waker().clone()),
        }
    }

    fn wake_task(&mut self) {
        if let Some(task) = &self.task {
            task.wake_by_ref();
        }
    }

    /// Writes queued frames, as many per write as allowed, until the queue is empty, the
    /// socket is full, or a write fails.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.frames.is_empty() {
            self.blocked = false;
            return Poll::Ready(Ok(()));
        }
        // A socket that takes bytes after refusing some is being read by the peer.
        let was_blocked = self.blocked;
        let mut took = false;
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                let skip = if count == 0 { self.written } else { 0 };
                *slot = IoSlice::new(&frame[skip..]);
                count += 1;
            }
            match Pin::new(&mut self.sink).poll_write_vectored(cx, &slices[..count]) {
                Poll::Pending => {
                    self.drained += u64::from(was_blocked && took);
                    self.blocked = true;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return self.fail(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    took = true;
                    let queued = self.frames.len();
                    self.advance(n);
                    if let Some(sizes) = &self.write_sizes {
                        sizes.observe((queued - self.frames.len()) as f64);
                    }
                    self.wake_if_room();
                }
                Poll::Ready(Err(e)) => return self.fail(e),
            }
        }
        self.drained += u64::from(was_blocked && took);
        self.blocked = false;
        match Pin::new(&mut self.sink).poll_flush(cx) {
            Poll::Ready(Err(e)) => self.fail(e),
            other => other,
        }
    }

    /// Forgets `n` written bytes from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                return;
            };
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            self.frames.pop_front();
        }
    }

    /// Wakes the task when it waits for room that the queue now has.
    fn wake_if_room(&mut self) {
        if self
            .room_wanted
            .is_some_and(|limit| self.frames.len() <= limit)
        {
            self.room_wanted = None;
            self.wake_task();
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<io::Result<()>> {
        self.failed = true;
        self.frames.clear();
        self.written = 0;
        self.wake_task();
        Poll::Ready(Err(error))
    }
}

/// The socket as tungstenite sees it: reads from the read half, writes into the outbox,
/// so that its pongs, pings and close frames keep their place among the other frames.
pub struct Duplex<R> {
    pub read: R,
    pub outbox: std::sync::Arc<Outbox>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Duplex<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<R: Unpin> AsyncWrite for Duplex<R> {
    /// Queues one frame: tungstenite has no write buffer, so each write is a whole frame.
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut q = self.outbox.queue.lock();
        if q.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Pongs and pings count against the bound like every other frame: a peer that
        // floods pings and reads nothing is a slow consumer. The frame is dropped (the
        // connection is closing) rather than refused, which tungstenite would buffer.
        // Only the close frame, the last one, goes past the bound.
        if q.frames.len() >= self.outbox.capacity && !is_close(buf) {
            q.kill
                .get_or_insert(crate::ingest::protocol::close::SLOW_CONSUMER);
            q.wake_task();
            return Poll::Ready(Ok(buf.len()));
        }
        q.frames.push_back(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_write(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outbox = &self.outbox;
        match outbox.poll_write(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut outbox.queue.lock().sink).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::wire::WireFrame;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    fn frame(n: usize) -> Bytes {
        WireFrame::text(&format!("{{\"n\":{n}}}")).wire().clone()
    }

    /// Reads everything written to the other end of a duplex pipe until `len` bytes came.
    async fn read_exactly(peer: &mut tokio::io::DuplexStream, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        peer.read_exact(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn frames_leave_in_order_across_a_full_socket_and_the_bound_holds() {
        // A pipe that takes 64 bytes at a time: most frames are written in parts.
        let (ours, mut peer) = tokio::io::duplex(64);
        let outbox = Arc::new(Outbox::new(Box::new(ours), 1000));
        let frames: Vec<Bytes> = (0..200).map(frame).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for f in &frames {
            outbox.push(f.clone()).unwrap();
        }
        outbox.flush();
        // The pipe filled up: the outbox is blocked, so another flush leaves it alone,
        // and the task (here, this future) writes the rest as the peer reads.
        outbox.flush();
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                std::future::poll_fn(|cx| outbox.poll_write(cx))
                    .await
                    .unwrap()
            })
        };
        assert_eq!(read_exactly(&mut peer, expected.len()).await, expected);
        writer.await.unwrap();
        assert_eq!(outbox.queued(), 0);

        let small = Outbox::new(Box::new(tokio::io::sink()), 2);
        small.push(frame(1)).unwrap();
        small.push(frame(2)).unwrap();
        assert_eq!(small.push(frame(3)), Err(Refused::Full));
    }

    #[tokio::test]
    async fn discard_keeps_a_partly_written_frame_whole() {
        let (ours, mut peer) = tokio::io::duplex(8);
        let outbox = Outbox::new(Box::new(ours), 100);
        let first = frame(1);
        outbox.push(first.clone()).unwrap();
        outbox.push(frame(2)).unwrap();
        outbox.flush(); // writes 8 bytes of the first frame, then blocks
        outbox.discard();
        assert_eq!(outbox.queued(), 1);
        let rest = tokio::spawn(async move {
            std::future::poll_fn(|cx| outbox.poll_write(cx))
                .await
                .unwrap()
        });
        assert_eq!(read_exactly(&mut peer, first.len()).await, first.to_vec());
        rest.await.unwrap();
    }

    #[tokio::test]
    async fn control_frames_count_against_the_bound_and_only_close_passes_it() {
        use tokio::io::AsyncWriteExt;
        let (ours, _peer) = tokio::io::duplex(64);
        let outbox = Arc::new(Outbox::new(Box::new(ours), 2));
        outbox.push(frame(1)).unwrap();
        outbox.push(frame(2)).unwrap();
        let mut duplex = Duplex {
            read: tokio::io::empty(),
            outbox: outbox.clone(),
        };
        let pong = [0x8a, 0x00];
        duplex.write_all(&pong).await.unwrap();
        assert_eq!(outbox.queued(), 2, "a pong past the bound is not queued");
        let trouble = std::future::poll_fn(|cx| outbox.poll_trouble(cx)).await;
        assert_eq!(
            trouble,
            Trouble::Kill(crate::ingest::protocol::close::SLOW_CONSUMER)
        );
        let close = [0x88, 0x02, 0x0f, 0xa8];
        duplex.write_all(&close).await.unwrap();
        assert_eq!(outbox.queued(), 3, "the close frame always is");
    }

    #[tokio::test]
    async fn a_write_that_makes_room_wakes_the_task_waiting_for_it() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Woken(AtomicBool);
        impl std::task::Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (ours, _peer) = tokio::io::duplex(4096);
        let outbox = Outbox::new(Box::new(ours), 8);
        for n in 0..8 {
            outbox.push(frame(n)).unwrap();
        }
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(outbox.poll_room(&mut cx, 4).is_pending());
        // A write from another thread (the pipeline's) polls with a no-op waker: the
        // outbox itself must wake the task it made room for.
        outbox.flush();
        assert!(woken.0.load(Ordering::SeqCst), "the waiting task is woken");
        assert!(outbox.poll_room(&mut cx, 4).is_ready());
    }

    #[tokio::test]
    async fn a_kill_or_a_failed_write_is_the_tasks_trouble() {
        let outbox = Outbox::new(Box::new(tokio::io::sink()), 10);
        outbox.kill(4008);
        let trouble = std::future::poll_fn(|cx| outbox.poll_trouble(cx)).await;
        assert_eq!(trouble, Trouble::Kill(4008));
        assert_eq!(outbox.push(frame(1)), Err(Refused::Gone));

        let (ours, peer) = tokio::io::duplex(64);
        drop(peer);
        let outbox = Outbox::new(Box::new(ours), 10);
        outbox.send([frame(1)]).unwrap();
        let trouble = std::future::poll_fn(|cx| outbox.poll_trouble(cx)).await;
        assert_eq!(trouble, Trouble::Failed);
    }
}
