//! The part of a call's body that its provider did not read.
//!
//! A provider may answer before it has read the whole request: a `413` or a `401` to a large
//! upload, say. The call's request hash (`X-Road-Request-Hash`), its log entry and, between
//! gateways, the check of the calling gateway's signature all cover the whole request, so a
//! gateway reads what the provider left unread before it logs and signs the answer. A body
//! is [`watch`]ed on its way to the provider; after the answer's head has come,
//! [`Rest::read_out`] waits until the provider has read the rest, or reads it itself (every
//! chunk still passes through what the body was built with: the hash, the archive, the
//! signature's check), and says whether the body ended whole.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;

use crate::exchange::BodyStream;

/// How long the rest of a body may go without a byte passing: the bound the gateway's hops
/// put on every read.
const DUE: Duration = Duration::from_secs(60);

/// How a watched body ended for its reader.
enum Ending {
    /// Read to its end (or as far as its declared length).
    Read,
    /// Broken off, with the reason.
    Broke(String),
    /// Let go unfinished: the rest, still to be read.
    Left(BodyStream),
}

/// A body on its way to the provider, which reports how its reader left it.
pub(crate) struct Watched {
    inner: Option<BodyStream>,
    /// Bytes its reader has taken so far.
    taken: Arc<AtomicU64>,
    /// The body's length, when declared.
    length: Option<u64>,
    report: Option<oneshot::Sender<Ending>>,
}

/// Where the rest of a watched body can be had once the answer is in.
pub(crate) struct Rest {
    ending: oneshot::Receiver<Ending>,
    taken: Arc<AtomicU64>,
}

/// Watches `body`, whose length is `length` when declared: a reader that stops at that
/// length has read it whole.
pub(crate) fn watch(body: BodyStream, length: Option<u64>) -> (Watched, Rest) {
    let (report, ending) = oneshot::channel();
    let taken = Arc::new(AtomicU64::new(0));
    let watched = Watched {
        inner: Some(body),
        taken: taken.clone(),
        length,
        report: Some(report),
    };
    (watched, Rest { ending, taken })
}

impl Watched {
    fn end(&mut self, ending: Ending) {
        self.inner = None;
        if let Some(report) = self.report.take() {
            let _ = report.send(ending);
        }
    }
}

impl Stream for Watched {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = std::task::ready!(inner.poll_next_unpin(cx));
        match &item {
            Some(Ok(chunk)) => {
                let len = chunk.len() as u64;
                let taken = self.taken.fetch_add(len, Ordering::Relaxed) + len;
                if self.length.is_some_and(|n| taken >= n) {
                    self.end(Ending::Read);
                }
            }
            Some(Err(e)) => {
                let reason = e.to_string();
                self.end(Ending::Broke(reason));
            }
            None => self.end(Ending::Read),
        }
        Poll::Ready(item)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(rest), Some(report)) = (self.inner.take(), self.report.take()) {
            let _ = report.send(Ending::Left(rest));
        }
    }
}

impl Rest {
    /// Waits until the body has been read to its end, reading what its reader left: `Ok`
    /// when it ended whole, or why it did not.
    pub(crate) async fn read_out(self) -> Result<(), String> {
        self.read_out_within(DUE).await
    }

    /// [`Rest::read_out`], with `due` the longest the body may go without a byte passing.
    async fn read_out_within(self, due: Duration) -> Result<(), String> {
        let Rest { mut ending, taken } = self;
        // While its reader still takes the body, however slowly, it is waited for.
        let mut seen = taken.load(Ordering::Relaxed);
        let ending = loop {
            match tokio::time::timeout(due, &mut ending).await {
                Ok(Ok(ending)) => break ending,
                Ok(Err(_)) => return Err("the request's body was dropped".into()),
                Err(_) => {
                    let now = taken.load(Ordering::Relaxed);
                    if now == seen {
                        return Err(format!(
                            "the provider answered and its request's body stopped for {} s",
                            due.as_secs()
                        ));
                    }
                    seen = now;
                }
            }
        };
        let mut rest = match ending {
            Ending::Read => return Ok(()),
            Ending::Broke(reason) => return Err(reason),
            Ending::Left(rest) => rest,
        };
        loop {
            match tokio::time::timeout(due, rest.next()).await {
                Err(_) => {
                    return Err(format!(
                        "the rest of the request's body did not come within {} s",
                        due.as_secs()
                    ));
                }
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn chunks(n: usize, seen: Arc<Mutex<usize>>) -> BodyStream {
        futures_util::stream::iter((0..n).map(|_| Ok(Bytes::from_static(b"0123456789"))))
            .map(move |c: Result<Bytes, std::io::Error>| {
                if let Ok(b) = &c {
                    *seen.lock().unwrap() += b.len();
                }
                c
            })
            .boxed()
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_whole_at_once() {
        let seen = Arc::new(Mutex::new(0));
        let (mut body, rest) = watch(chunks(3, seen.clone()), None);
        while body.next().await.is_some() {}
        assert_eq!(rest.read_out().await, Ok(()));
        assert_eq!(*seen.lock().unwrap(), 30);
    }

    #[tokio::test]
    async fn a_reader_that_stops_at_the_declared_length_has_read_it_whole() {
        let seen = Arc::new(Mutex::new(0));
        let (mut body, rest) = watch(chunks(3, seen.clone()), Some(30));
        for _ in 0..3 {
            body.next().await.unwrap().unwrap();
        }
        // The reader keeps the body, without asking for its end.
        assert_eq!(rest.read_out().await, Ok(()));
        drop(body);
    }

    #[tokio::test]
    async fn what_a_reader_leaves_is_read_through_the_body_it_was_built_with() {
        let seen = Arc::new(Mutex::new(0));
        let (mut body, rest) = watch(chunks(5, seen.clone()), None);
        body.next().await.unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), 10);
        drop(body);
        assert_eq!(rest.read_out().await, Ok(()));
        assert_eq!(*seen.lock().unwrap(), 50, "the rest passed the hash's feed");
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_before_or_after_it_is_let_go_is_not_whole() {
        let broken = || {
            futures_util::stream::iter(vec![
                Ok(Bytes::from_static(b"a")),
                Err(std::io::Error::other("the signature does not verify")),
            ])
            .boxed()
        };
        let (mut body, rest) = watch(broken(), None);
        body.next().await.unwrap().unwrap();
        assert!(body.next().await.unwrap().is_err());
        assert_eq!(
            rest.read_out().await,
            Err("the signature does not verify".to_string())
        );
        let (mut body, rest) = watch(broken(), None);
        body.next().await.unwrap().unwrap();
        drop(body);
        assert_eq!(
            rest.read_out().await,
            Err("the signature does not verify".to_string())
        );
    }

    #[tokio::test]
    async fn a_reader_still_taking_the_body_is_waited_for_and_one_that_stopped_is_not() {
        let due = Duration::from_millis(100);
        // A reader that takes a piece every 40 ms for 400 ms: past `due`, still moving.
        let seen = Arc::new(Mutex::new(0));
        let (mut body, rest) = watch(chunks(10, seen.clone()), None);
        let reader = tokio::spawn(async move {
            while body.next().await.is_some() {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        assert_eq!(rest.read_out_within(due).await, Ok(()));
        assert_eq!(*seen.lock().unwrap(), 100);
        reader.await.unwrap();
        // A reader that holds the body and stops taking it.
        let (mut body, rest) = watch(chunks(10, seen.clone()), None);
        body.next().await.unwrap().unwrap();
        let outcome = rest.read_out_within(due).await;
        assert!(outcome.unwrap_err().contains("stopped"));
        drop(body);
    }
}
