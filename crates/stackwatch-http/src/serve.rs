//! The accept loop every stackwatch HTTP server runs: `axum::serve` with the two limits
//! it lacks. A peer gets [`ServeOptions::header_read_timeout`] to send its request
//! headers (slowloris peers are dropped, not held forever), and at most
//! [`ServeOptions::max_connections`] connections are open at once (one more is closed
//! at once and counted).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower_service::Service;

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a peer has to send a request's headers, on a new or kept-alive connection
    /// (default 10 s).
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed on accept (default 1 024).
    pub max_connections: u64,
    /// After shutdown, how long requests in flight may take to finish (default 5 s).
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Counters of the accept loop, for `/metrics`.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Connections accepted.
    pub accepted_total: AtomicU64,
    /// Connections closed on accept because `max_connections` were open.
    pub refused_total: AtomicU64,
    /// Connections that ended in an error (header timeout, malformed request, reset).
    pub errors_total: AtomicU64,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish for up to `shutdown_grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    opts: ServeOptions,
    stats: Arc<ServeStats>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a peer that reset before accept: back
                    // off briefly instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if stats.open_connections.load(Ordering::Relaxed) >= opts.max_connections {
            stats.refused_total.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        stats.accepted_total.fetch_add(1, Ordering::Relaxed);
        stats.open_connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| app.clone().call(req));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let stats = stats.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                stats.errors_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            stats.open_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(opts.shutdown_grace) => {
            tracing::debug!("connections still open after the shutdown grace period");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_headers_are_dropped_and_connections_capped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ServeStats::default());
        let opts = ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 4,
            ..ServeOptions::default()
        };
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, opts, stats.clone(), async {
            let _ = rx.await;
        }));
        // Four peers that send half a request line and stall.
        let mut slow = Vec::new();
        for _ in 0..4 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            slow.push(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A fifth is over the cap: closed at once.
        let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(stats.refused_total.load(Ordering::Relaxed) >= 1);
        // The stalled peers are dropped after the header timeout...
        for s in &mut slow {
            let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            assert!(r.is_ok(), "a slow-header connection was held open");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stats.open_connections.load(Ordering::Relaxed), 0);
        // ...and a normal request is served.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        ok.read_to_string(&mut body).await.unwrap();
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("ok"),
            "{body}"
        );
        let _ = tx.send(());
        server.await.unwrap();
    }
}
