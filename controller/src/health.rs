//! `/metrics`, `/healthz` and `/readyz` over a deliberately tiny HTTP/1.1 responder (GET only, one request per connection).
//!
//! Scrapers and kubelet probes send small GETs; a full HTTP stack would add a dependency tree
//! for three fixed routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// A request head larger than this is refused; probes and scrapers send a few hundred bytes.
const REQUEST_HEAD_LIMIT_BYTES: usize = 8 * 1024;
/// A client that does not finish its request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server reports.
#[derive(Clone)]
pub struct Health {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// True once every reflector store has listed (readiness).
    pub ready: Arc<AtomicBool>,
}

/// Serves until the listener fails; each connection is handled in its own task.
pub async fn serve(listener: TcpListener, health: Health) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let health = health.clone();
        tokio::spawn(async move {
            // A client going away mid-response is not our problem.
            let _ = handle(stream, &health).await;
        });
    }
}

async fn handle(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "too large\n").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = route(&head, health);
    respond(&mut stream, status, content_type, &body).await
}

/// The response to a request whose head is `head`.
pub fn route(head: &str, health: &Health) -> (&'static str, &'static str, String) {
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" {
        return ("405 Method Not Allowed", "text/plain", "only GET\n".to_string());
    }
    match path {
        "/metrics" => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", health.metrics.encode()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" => ("503 Service Unavailable", "text/plain", "caches not synced\n".to_string()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    }
}

/// Reads up to the blank line ending the request head; `None` when it is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buffer.len() > REQUEST_HEAD_LIMIT_BYTES {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&buffer).into_owned()))
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
