//! Readiness probes as kubelet runs them: httpGet (a 2xx or 3xx answer), tcpSocket (a
//! connection) and exec (exit status 0), against the pod's IP.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::container::Running;

/// Runs `probe` of `container` once; true on success.
pub async fn check(probe: &Probe, container: &Container, pod_ip: &str, running: &Running) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(get) = &probe.http_get {
        let Some(port) = port_number(&get.port, container) else { return false };
        let host = get.host.clone().unwrap_or_else(|| pod_ip.to_string());
        let path = get.path.clone().unwrap_or_else(|| "/".to_string());
        return tokio::time::timeout(timeout, http_get(&host, port, &path))
            .await
            .ok()
            .flatten()
            .is_some_and(|(code, _)| (200..400).contains(&code));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_number(&tcp.port, container) else { return false };
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
        return matches!(tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await, Ok(Ok(_)));
    }
    if let Some(exec) = &probe.exec {
        return running.exec(exec.command.as_deref().unwrap_or_default(), timeout).await.is_ok();
    }
    // A gRPC probe is not modelled: it passes, as a probe-less container is ready.
    true
}

fn port_number(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// `GET http://host:port/path` as a probe sends it: the status code and the body.
pub async fn http_get(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((host, port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).await.ok()?;
    let text = String::from_utf8_lossy(&text);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Some((code, body))
}
