//! The HTTP server loop: accepts connections up to a cap and serves each
//! with hyper's HTTP/1 under three clocks, so slow or stalled clients cannot
//! pile up.
//!
//! ```text
//!   accept ── permit (max_connections; the rest wait in the backlog)
//!     └─ connection: header timeout (hyper) · idle timeout (no byte moved)
//!          └─ request: request timeout (api middleware, 408)
//! ```
//!
//! On cancel the loop stops accepting, asks every connection to finish its
//! current request and close, and waits for them up to the request timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Timeouts and the connection cap (defaults in [`crate::settings::HttpSettings`]).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time to receive a request's headers once the connection is ready for
    /// one (so also how long an idle keep-alive connection is kept).
    pub header_timeout: Duration,
    /// Time from headers to response (the body read and the handler).
    pub request_timeout: Duration,
    /// Time a connection may go without a byte moving either way.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `cancel` fires, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let connections = TaskTracker::new();
    loop {
        // Take the permit before accepting: connections over the cap stay
        // in the kernel's backlog instead of holding memory here.
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleTimeout::new(stream, config.idle_timeout));
        let service = TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection closed: {e}");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(config.request_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still open after {:?}; closing them",
            connections.len(),
            config.request_timeout
        );
    }
}

/// An I/O stream that fails with `TimedOut` once no byte has moved in
/// either direction for `timeout`: a client that stops reading a response
/// (or stops sending a body) loses its connection instead of holding it.
struct IdleTimeout<T> {
    io: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Called when the stream is not ready: fail if the clock ran out.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn an_idle_stream_times_out_and_traffic_keeps_it_alive() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_millis(300));
        let mut buf = [0u8; 8];
        client.write_all(b"hi").await.expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.read(&mut buf).await.expect("read"), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.write_all(b"again").await.expect("write");
        assert_eq!(server.read(&mut buf).await.expect("read"), 5);
        let started = std::time::Instant::now();
        let e = server.read(&mut buf).await.expect_err("idle");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
