//! The handshake deadline, charged to the peer.
//!
//! A handshake is given [`crate::server::Limits::handshake_timeout`] of *waiting
//! for the peer*, summed over the whole handshake (not per read): the time from
//! a read that found no data until the peer's data arrived (the moment the
//! socket woke the task). Time the server spends itself, including queueing
//! for a CPU when a thousand honest clients arrive at once, is not charged, so
//! an overloaded server does not cut off the honest clients it is slow to
//! serve; an idle or trickling peer runs out of its budget all the same. The
//! connection's total lifetime stays bounded by `connection_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Default)]
struct State {
    /// Peer wait already completed (data arrived).
    charged: Duration,
    /// A read found no data at this instant and the peer has not sent since.
    waiting_since: Option<Instant>,
}

/// Shared view of how long a stream has waited for its peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerWait(Arc<Mutex<State>>);

impl PeerWait {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Total time spent waiting for the peer up to `now`.
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        let st = self.lock();
        st.charged + st.waiting_since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// When the budget `limit` runs out if the peer stays silent, or `None` while
    /// the server itself has work to do (the peer is not being waited for).
    pub(crate) fn expires_at(&self, limit: Duration) -> Option<Instant> {
        let st = self.lock();
        st.waiting_since.map(|s| s + limit.saturating_sub(st.charged))
    }

    fn start_waiting(&self) {
        let mut st = self.lock();
        if st.waiting_since.is_none() {
            st.waiting_since = Some(Instant::now());
        }
    }

    /// The peer's data arrived (or the read completed): stop charging.
    fn stop_waiting(&self) {
        let mut st = self.lock();
        if let Some(s) = st.waiting_since.take() {
            st.charged += s.elapsed();
        }
    }
}

/// Forwards the wake-up and records, at that moment, that the peer has sent.
struct RecordingWaker {
    inner: Waker,
    wait: PeerWait,
}

impl Wake for RecordingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wait.stop_waiting();
        self.inner.wake_by_ref();
    }
}

/// A stream whose reads charge waiting time to a [`PeerWait`].
pub(crate) struct Metered<S> {
    inner: S,
    wait: PeerWait,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S) -> (Self, PeerWait) {
        let wait = PeerWait::default();
        (Self { inner, wait: wait.clone() }, wait)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waker =
            Waker::from(Arc::new(RecordingWaker { inner: cx.waker().clone(), wait: this.wait.clone() }));
        let mut cx2 = Context::from_waker(&waker);
        match Pin::new(&mut this.inner).poll_read(&mut cx2, buf) {
            Poll::Pending => {
                this.wait.start_waiting();
                Poll::Pending
            }
            ready => {
                this.wait.stop_waiting();
                ready
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn only_time_without_data_is_charged() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut m, wait) = Metered::new(a);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            m.read_exact(&mut buf).await.unwrap();
            m
        });
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(wait.expires_at(Duration::from_secs(1)).is_some(), "the reader waits for the peer");
        b.write_all(b"x").await.unwrap();
        let _m = reader.await.unwrap();
        let waited = wait.waited(Instant::now());
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(wait.expires_at(Duration::from_secs(1)).is_none(), "not waiting any more");
        // Time passing while nobody reads is not charged.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(wait.waited(Instant::now()) < waited + Duration::from_millis(20));
    }
}
