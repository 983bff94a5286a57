//! The client to Meta's Graph API (the reply gate's sends, onboarding's calls): TLS from Rust (rustls, Mozilla's roots bundled),
//! connections reused, a bound on connecting and on the whole answer. It never retries: a send is
//! not idempotent.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long connecting to Meta may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Meta may take to answer in full.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Meta's answer, passed back to the agent as it is.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Meta's Graph API is unreachable: {0}")]
    Unreachable(String),
    #[error("Meta's Graph API did not answer within {ANSWER_TIMEOUT:?}")]
    Silent,
}

/// A client of `{graph_url}`.
#[derive(Clone)]
pub struct Graph {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
}

impl Graph {
    pub fn new(base: &str) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Graph {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(https),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Posts `body` to `{graph_url}/{version}/{phone_number_id}/messages` with the agent's
    /// `Authorization` (and `traceparent`, when given).
    pub async fn send(
        &self,
        version: &str,
        phone_number_id: &str,
        authorization: Option<&HeaderValue>,
        traceparent: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, Error> {
        let path = format!("{version}/{phone_number_id}/messages");
        let mut headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        headers.extend(authorization.map(|a| (header::AUTHORIZATION, a.clone())));
        if let Some(tp) = traceparent {
            headers.push((header::HeaderName::from_static("traceparent"), tp.clone()));
        }
        self.call(hyper::Method::POST, &path, headers, body).await
    }

    /// Coexist's own call to Meta (onboarding) with a business token: `GET` when `body` is
    /// `None`, else `POST` of the JSON. The token goes in the header only.
    pub async fn with_token(
        &self,
        path: &str,
        token: &crate::runtime::secret::Secret,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Error> {
        let bearer = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| Error::Unreachable("the token is not a valid header value".into()))?;
        let mut headers = vec![(header::AUTHORIZATION, bearer)];
        let (method, body) = match body {
            None => (hyper::Method::GET, Bytes::new()),
            Some(b) => {
                headers.push((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
                (hyper::Method::POST, Bytes::from(b.to_string()))
            }
        };
        self.call(method, path, headers, body).await
    }

    /// One request to `{graph_url}/{path}`, bounded by [`ANSWER_TIMEOUT`].
    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        headers: Vec<(header::HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Answer, Error> {
        let uri = format!("{}/{path}", self.base);
        let mut request = hyper::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Error::Unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| Error::Silent)?
    }
}

/// An error with its causes (the client's own message is only "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
