//! A plain-HTTP client for the hub's `/v1` API and probes, and the HTTP error shape.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::WAIT;

/// A plain-HTTP client for the hub's `/v1` API and probes.
pub(crate) struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(addr: SocketAddr) -> Http {
        Http::with_headers(addr, &[])
    }

    pub(crate) fn with_headers(addr: SocketAddr, headers: &[(&str, &str)]) -> Http {
        let mut defaults = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            defaults.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                reqwest::header::HeaderValue::from_str(value).expect("header value"),
            );
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .default_headers(defaults)
            .build()
            .expect("HTTP client");
        Http {
            base: format!("http://{addr}"),
            client,
        }
    }

    /// GET `path` (with its query), answering (status, JSON body).
    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.json(self.client.get(self.url(path))).await
    }

    /// GET `path` with `query` pairs, URL-encoded.
    pub(crate) async fn get_query(&self, path: &str, query: &[(&str, String)]) -> (u16, Value) {
        self.json(self.client.get(self.url(path)).query(query))
            .await
    }

    /// POST `body` as JSON to `path`.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// PUT `body` as JSON to `path`.
    pub(crate) async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self
            .client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.json(request).await
    }

    /// DELETE `path`.
    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        self.json(self.client.delete(self.url(path))).await
    }

    /// POST raw bytes labelled as JSON.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.json(request).await
    }

    /// GET `path`, answering (status, content type, text body).
    pub(crate) async fn get_text(&self, path: &str) -> (u16, String, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("HTTP GET");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response.text().await.expect("HTTP body");
        (status, content_type, body)
    }

    /// Publishes `body` (one event or an array) and returns the `results` of a 200 answer.
    pub(crate) async fn publish(&self, body: &Value) -> Vec<Value> {
        let (status, answer) = self.post("/v1/events", body).await;
        assert_eq!(status, 200, "POST /v1/events: {answer}");
        answer["results"]
            .as_array()
            .unwrap_or_else(|| panic!("results is a list: {answer}"))
            .clone()
    }

    /// Sends `method` to `path` with extra `headers`, answering the raw response.
    pub(crate) async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("HTTP request")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("HTTP body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("HTTP {status} body is not JSON ({err}): {text}"));
        (status, body)
    }
}

/// Asserts an HTTP answer is the JSON error shape with `status` and `code`.
pub(crate) fn assert_http_error(answer: &(u16, Value), status: u16, code: &str) {
    let (got_status, body) = answer;
    assert_eq!(*got_status, status, "HTTP status: {body}");
    assert_eq!(body["error"]["code"], json!(code), "error code: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "error message: {body}"
    );
}
