//! Shared test support: a mocked API server (kube-rs' ApiServerVerifier recipe), a fake one that keeps state, and seed fixtures.
#![allow(dead_code, unreachable_pub)]

pub mod apiserver;
pub mod fixtures;
pub mod flow;

use std::sync::Arc;
use std::time::Duration;

use controller::context::Context;
use controller::execute::Executor;
use controller::metrics::Metrics;
use controller::observe::{Stores, Writers};
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::Value;
use tokio::sync::watch;

/// The server side of the mocked client.
pub type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every request arrives at the returned handle.
pub fn mock_client() -> (Client, ApiServerHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as the API server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// `GET`, `PATCH`, ….
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The Content-Type header.
    pub content_type: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Captured {
    /// `METHOD path?query`.
    pub fn line(&self) -> String {
        match &self.query {
            Some(query) => format!("{} {}?{}", self.method, self.path, query),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// Reads a request into a [`Captured`].
pub async fn capture(request: Request<Body>) -> Captured {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let content_type =
        request.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = request.into_body().collect_bytes().await.expect("request body");
    let body =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("request body is JSON") };
    Captured { method, path, query, content_type, body }
}

/// A JSON response with `status`.
pub fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("response JSON")))
        .expect("response")
}

/// The `Status` object the API server answers errors with.
pub fn status_error(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// kube-rs' ApiServerVerifier: asserts each request in turn and answers it.
pub struct ApiServerVerifier(pub ApiServerHandle);

impl ApiServerVerifier {
    /// The next request, answered by `answer` (which sees it first).
    pub async fn handle(&mut self, answer: impl FnOnce(&Captured) -> Response<Body>) -> Captured {
        let (request, send) = tokio::time::timeout(Duration::from_secs(2), self.0.next_request())
            .await
            .expect("a request within 2s")
            .expect("the client is alive");
        let captured = capture(request).await;
        send.send_response(answer(&captured));
        captured
    }

    /// Asserts that no request arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.0.next_request()).await {
            panic!("unexpected request: {}", capture(request).await.line());
        }
    }
}

/// Test fixture: stores, their writers and a context whose client is mocked.
pub struct Harness {
    /// The reflector stores the context reads.
    pub stores: Stores,
    /// Their writers, to play the watchers.
    pub writers: Writers,
    /// The context under test.
    pub context: Arc<Context>,
    /// Flip to false to take leadership away.
    pub leader: watch::Sender<bool>,
}

impl Harness {
    /// A harness whose requests arrive at the returned handle; this replica leads.
    pub fn new() -> (Harness, ApiServerHandle) {
        let (client, handle) = mock_client();
        let (stores, writers) = Stores::new();
        let (leader, is_leader) = watch::channel(true);
        let reporter = Reporter { controller: "ferrofluid".to_string(), instance: Some("test".to_string()) };
        let executor = Executor::new(client, reporter, is_leader.clone());
        let metrics = Arc::new(Metrics::new(stores.clone()));
        let context =
            Arc::new(Context::new(stores.clone(), executor, model::reconcile::Config::default(), metrics, is_leader));
        (Harness { stores, writers, context, leader }, handle)
    }
}
