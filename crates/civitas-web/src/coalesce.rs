//! Writes that wait for the other ready tasks before they go out, for the HTTP/2
//! connection between two gateways.
//!
//! hyper runs each HTTP/2 stream's body in a task of its own, and each piece a stream
//! sends wakes the connection's task, which Tokio runs next (the woken task takes the
//! worker's next turn). So when one commit of the ledger releases the end frames of nine
//! calls, the connection writes nine frames one after the other, each its own TLS record
//! and its own system call, and the peer is woken nine times. [`Coalescing`] keeps small
//! writes back and, at a flush, first yields once to the tasks already waiting: they add
//! their frames, and everything goes out in one write. A flush is late by at most the
//! tasks ready at that moment, none of which waits on it; and when a yield gathered
//! nothing (one stream sending, such as a large body), the next flushes do not yield.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at least this large go straight through (after what is kept), so a streamed
/// body is not copied; smaller ones are kept until a flush or until this much is kept.
const KEEP: usize = 4 * 1024;

/// `T` with its small writes kept until a flush, and the flush yielding once first.
pub struct Coalescing<T> {
    inner: T,
    kept: Vec<u8>,
    /// How much of `kept` is written already.
    sent: usize,
    /// The flush has yielded once and now writes; how much was kept when it yielded.
    yielded: Option<usize>,
    /// Flushes left that write at once: a yield that gathered nothing (one stream sending,
    /// a body streaming) only delays, so the next [`SKIP`] flushes do not yield.
    skip: u8,
}

/// How many flushes write at once after a yield that gathered nothing.
const SKIP: u8 = 16;

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Coalescing<T> {
        Coalescing {
            inner,
            kept: Vec::new(),
            sent: 0,
            yielded: None,
            skip: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes out what is kept.
    fn poll_send_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.kept.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.kept[self.sent..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.kept.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if me.kept.len() + len > KEEP {
            std::task::ready!(me.poll_send_kept(cx))?;
        }
        if len >= KEEP {
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            me.kept.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.kept.is_empty() && me.yielded.is_none() {
            if me.skip == 0 {
                // Woken from its own poll, the task goes behind the tasks already ready.
                me.yielded = Some(me.kept.len());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            me.skip -= 1;
        }
        if let Some(before) = me.yielded.take()
            && me.kept.len() <= before
        {
            me.skip = SKIP;
        }
        std::task::ready!(me.poll_send_kept(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_send_kept(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

/// A connection made by hyper's client: an HTTP/2 one with its writes coalesced
/// ([`Coalescing`]), any other as it is (an HTTP/1.1 connection carries one message at a
/// time, so there is nothing to gather).
pub enum ClientConn<T> {
    Plain(T),
    Coalesced(TokioIo<Coalescing<TokioIo<T>>>),
}

impl<T: Connection> ClientConn<T> {
    pub fn new(conn: T) -> ClientConn<T> {
        if conn.connected().is_negotiated_h2() {
            ClientConn::Coalesced(TokioIo::new(Coalescing::new(TokioIo::new(conn))))
        } else {
            ClientConn::Plain(conn)
        }
    }
}

impl<T: Connection> Connection for ClientConn<T> {
    fn connected(&self) -> Connected {
        match self {
            ClientConn::Plain(c) => c.connected(),
            ClientConn::Coalesced(c) => c.inner().inner.inner().connected(),
        }
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> hyper::rt::Read for ClientConn<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(c) => Pin::new(c).poll_read(cx, buf),
            ClientConn::Coalesced(c) => Pin::new(c).poll_read(cx, buf),
        }
    }
}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin> hyper::rt::Write for ClientConn<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(c) => Pin::new(c).poll_write(cx, buf),
            ClientConn::Coalesced(c) => Pin::new(c).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            ClientConn::Coalesced(c) => Pin::new(c).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientConn::Plain(c) => c.is_write_vectored(),
            ClientConn::Coalesced(c) => c.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(c) => Pin::new(c).poll_flush(cx),
            ClientConn::Coalesced(c) => Pin::new(c).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(c) => Pin::new(c).poll_shutdown(cx),
            ClientConn::Coalesced(c) => Pin::new(c).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A writer that records each write it is given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Counts its wake-ups.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(c: &mut Coalescing<Recorder>, cx: &mut Context<'_>, bytes: &[u8]) {
        let n = Pin::new(c).poll_write(cx, bytes);
        assert!(matches!(n, Poll::Ready(Ok(n)) if n == bytes.len()));
    }

    /// Small writes go out together at a flush, after it has yielded once (woken, to run
    /// behind the tasks already ready); a flush with nothing kept does not yield.
    #[test]
    fn small_writes_go_out_as_one_after_the_flush_yields_once() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalescing::new(Recorder::default());
        write(&mut c, &mut cx, b"one ");
        write(&mut c, &mut cx, b"two ");
        assert!(c.inner.writes.is_empty());

        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // Another task's frame comes in while the flush waits its turn.
        write(&mut c, &mut cx, b"three");
        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.writes, vec![b"one two three".to_vec()]);
        assert_eq!(c.inner.flushes, 1);

        assert!(matches!(
            Pin::new(&mut c).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.inner.writes.len(), 1);
    }

    /// A yield that gathered nothing is not repeated for the next flushes: with one stream
    /// sending, waiting only delays.
    #[test]
    fn a_yield_that_gathers_nothing_is_not_repeated_for_a_while() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalescing::new(Recorder::default());
        write(&mut c, &mut cx, b"alone");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        for n in 0..SKIP {
            write(&mut c, &mut cx, b"next");
            assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready(), "flush {n}");
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.inner.writes.len(), 1 + usize::from(SKIP));
        write(&mut c, &mut cx, b"then");
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_pending());
    }

    /// A large write (a streamed body's pieces) goes straight through, after what was kept,
    /// and is not copied into the buffer; small writes past the buffer's size go out too.
    #[test]
    fn large_writes_go_straight_through_after_what_is_kept() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut c = Coalescing::new(Recorder::default());
        write(&mut c, &mut cx, b"head");
        let large = vec![7u8; KEEP];
        write(&mut c, &mut cx, &large);
        assert_eq!(c.inner.writes, vec![b"head".to_vec(), large]);
        assert!(c.kept.is_empty());

        let piece = vec![1u8; KEEP / 2 + 1];
        write(&mut c, &mut cx, &piece);
        write(&mut c, &mut cx, &piece);
        assert_eq!(c.inner.writes.len(), 3);
        assert_eq!(c.inner.writes[2], piece);
        assert_eq!(c.kept, piece);
    }
}
