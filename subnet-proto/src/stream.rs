//! Serving large artefacts: chunks are slices of one shared buffer, made as the client reads them
//! (a request costs no copy of the payload, and a slow reader holds only a reference to it), and a
//! stream that is still going at its deadline ends with `DEADLINE_EXCEEDED`.

use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::Status;

/// How long a server keeps one response stream going: twice the clients' own request timeout, so
/// an honest client has given up before a server cuts it off.
pub const STREAM_DEADLINE: Duration =
    Duration::from_secs(2 * crate::limits::REQUEST_TIMEOUT.as_secs());

/// A buffer the caller keeps sharing, as `Bytes` (no copy).
pub fn shared(buffer: Arc<Vec<u8>>) -> Bytes {
    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    Bytes::from_owner(Shared(buffer))
}

/// `bytes` in slices of at most `chunk` bytes (none for an empty buffer), each sharing its memory.
pub fn slices(bytes: Bytes, chunk: usize) -> impl Iterator<Item = Bytes> + Send + 'static {
    assert!(chunk > 0, "chunks of zero bytes");
    (0..bytes.len().div_ceil(chunk)).map(move |k| {
        let start = k * chunk;
        bytes.slice(start..(start + chunk).min(bytes.len()))
    })
}

/// A response stream that ends with `DEADLINE_EXCEEDED` once `deadline` has passed since it was
/// made. The clock is checked whenever the transport asks for the next item.
pub struct Deadline<S> {
    inner: S,
    expires: Pin<Box<tokio::time::Sleep>>,
    deadline: Duration,
    done: bool,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, deadline: Duration) -> Self {
        Self {
            inner,
            expires: Box::pin(tokio::time::sleep(deadline)),
            deadline,
            done: false,
        }
    }
}

impl<S, T> Stream for Deadline<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.expires.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the stream was not read within {} s",
                self.deadline.as_secs()
            )))));
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if matches!(next, Poll::Ready(None)) {
            self.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn slices_share_the_buffer_and_cover_it_exactly() {
        let bytes = Bytes::from((0..=255u8).cycle().take(2500).collect::<Vec<u8>>());
        let parts: Vec<Bytes> = slices(bytes.clone(), 1000).collect();
        assert_eq!(
            parts.iter().map(Bytes::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(parts.concat(), bytes.to_vec());
        // A slice points into the original buffer: no copy was made.
        assert_eq!(parts[1].as_ptr(), bytes[1000..].as_ptr());
        assert_eq!(slices(Bytes::new(), 1000).count(), 0);
    }

    // On paused time: the clock moves only when the test moves it (or when every task waits), so
    // a 30-second deadline costs no wall time.
    #[tokio::test(start_paused = true)]
    async fn a_stream_still_going_at_its_deadline_ends_with_deadline_exceeded() {
        // A peer that never lets the stream finish: endless items, or none at all.
        let endless = futures::stream::repeat_with(|| Ok::<_, Status>(1u8));
        let silent = futures::stream::pending::<Result<u8, Status>>();
        for stream in [
            Box::pin(endless) as Pin<Box<dyn Stream<Item = Result<u8, Status>> + Send>>,
            Box::pin(silent),
        ] {
            let started = tokio::time::Instant::now();
            let mut stream = Deadline::new(stream, Duration::from_secs(30));
            let mut last = None;
            while let Some(item) = stream.next().await {
                last = Some(item);
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            let status = last.expect("an item").expect_err("ends with an error");
            assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
            assert!(started.elapsed() >= Duration::from_secs(30));
        }
        // A stream that finishes in time is left as it is.
        let quick = futures::stream::iter([Ok::<_, Status>(1), Ok(2)]);
        let items: Vec<_> = Deadline::new(quick, Duration::from_secs(1)).collect().await;
        assert_eq!(items.len(), 2);
    }
}
