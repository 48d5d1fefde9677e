//! The idle timeout every streaming session shares, whatever its kind (exec, attach,
//! port-forward) and transport (WebSocket, SPDY): the upgraded connection is wrapped in
//! [`Tracked`], which notes each byte that moves either way; [`Activity::expired`] resolves once
//! nothing moved for the timeout, and the session is then dropped, with the tasks it spawned
//! ([`Tasks`]) and so its connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When bytes last moved on a connection.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing moved.
    pub fn idle_for(&self) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        last.elapsed()
    }

    /// Resolves once nothing moved for `timeout`; never with no timeout.
    pub async fn expired(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

/// Runs `session` until it ends or its connection has been idle for `timeout`; then drops it.
pub async fn until_idle(
    activity: &Activity,
    timeout: Option<Duration>,
    transport: &'static str,
    session: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = session => {}
        _ = activity.expired(timeout) => {
            tracing::info!(transport, "streaming session idle: closing");
        }
    }
}

/// An I/O object whose traffic is noted in an [`Activity`].
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T) -> (Tracked<T>, Arc<Activity>) {
        let activity = Activity::new();
        (
            Tracked {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Tasks a session spawned, aborted when the session ends or is dropped: nothing it started
/// outlives it holding a half of its connection.
#[derive(Default)]
pub struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    pub fn spawn(&mut self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.retain(|t| !t.is_finished());
        self.0.push(tokio::spawn(f));
    }

    /// Waits for every task to end (those still running stay abortable by a drop meanwhile).
    pub async fn join(&mut self) {
        while let Some(t) = self.0.first_mut() {
            let _ = t.await;
            self.0.remove(0);
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_the_timeout_without_traffic() {
        let (a, b) = tokio::io::duplex(64);
        let (mut a, activity) = Tracked::new(a);
        let mut b = b;
        let t = Some(Duration::from_secs(5));
        // Traffic every 3 s keeps it alive past 5 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            a.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b.read_exact(&mut one).await.unwrap();
            b.write_all(b"y").await.unwrap();
            a.read_exact(&mut one).await.unwrap();
        }
        let started = tokio::time::Instant::now();
        activity.expired(t).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn no_timeout_never_expires() {
        let (a, _b) = tokio::io::duplex(64);
        let (_a, activity) = Tracked::new(a);
        let r = tokio::time::timeout(Duration::from_secs(3600), activity.expired(None)).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn dropped_tasks_are_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tasks = Tasks::default();
        tasks.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(tasks);
        // The task's sender is dropped with it.
        assert!(rx.await.is_err());
    }
}
