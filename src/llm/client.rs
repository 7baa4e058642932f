//! The client every caller uses: picks the wire format, sends, and retries in exactly one place.
//! HTTP failures become typed [`LlmError`]s here (status, Retry-After, a cut body), so the retry
//! decision is made on types, not on strings.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::record::{Recorder, Replayer};
use super::{ApiKey, ChatRequest, ChatResponse, LlmError, LlmSettings, Provider, anthropic, openai};

pub struct LlmClient {
    settings: LlmSettings,
    key: Option<ApiKey>,
    http: reqwest::Client,
    replayer: Option<Replayer>,
    recorder: Option<Recorder>,
}

impl LlmClient {
    pub fn new(settings: LlmSettings, key: Option<ApiKey>) -> Result<LlmClient, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(30).min(settings.request_timeout))
            .user_agent(concat!("improve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Connect { url: settings.url.clone(), detail: e.to_string() })?;
        let replayer = match (settings.provider, &settings.replay) {
            (Provider::Replay, Some(path)) => Some(Replayer::open(path)?),
            (Provider::Replay, None) => {
                return Err(LlmError::RecordingFile { path: String::new(), detail: "--provider replay needs --replay FILE".into() });
            }
            _ => None,
        };
        let recorder = match (&settings.record, settings.provider) {
            (Some(path), p) if p != Provider::Replay => Some(Recorder::open(path)?),
            _ => None,
        };
        Ok(LlmClient { settings, key, http, replayer, recorder })
    }

    pub fn provider(&self) -> Provider {
        self.settings.provider
    }

    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// One answer, after as many attempts as the policy allows. Cancellation wins at any await.
    pub async fn complete(&self, req: &ChatRequest, cancel: &CancellationToken) -> Result<ChatResponse, LlmError> {
        if let Some(replayer) = &self.replayer {
            return replayer.answer(req);
        }
        let policy = self.settings.retry;
        let mut attempt = 1;
        loop {
            let result = tokio::select! {
                r = self.send_once(req) => r,
                _ = cancel.cancelled() => return Err(LlmError::Cancelled),
            };
            match result {
                Ok(mut resp) => {
                    resp.attempts = attempt;
                    if let Some(rec) = &self.recorder {
                        rec.append(self.settings.provider, &self.settings.model, req, &resp)?;
                    }
                    return Ok(resp);
                }
                Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                    attempt += 1;
                    let wait = policy.delay(attempt, e.retry_after());
                    tracing::warn!(error = %e.kind(), attempt, wait_ms = wait.as_millis() as u64, "LLM call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(LlmError::Cancelled),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let model = &self.settings.model;
        let (url, body, mut headers) = match self.settings.provider {
            Provider::OpenAi => (openai::endpoint(&self.settings.url), openai::body(model, req), HeaderMap::new()),
            Provider::Anthropic => {
                let mut h = HeaderMap::new();
                h.insert("anthropic-version", HeaderValue::from_static(anthropic::VERSION));
                (anthropic::endpoint(&self.settings.url), anthropic::body(model, req), h)
            }
            Provider::Replay => unreachable_replay()?,
        };
        if let Some(key) = &self.key {
            let (name, value) = match self.settings.provider {
                Provider::Anthropic => ("x-api-key", key.expose().to_string()),
                _ => ("authorization", format!("Bearer {}", key.expose())),
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| LlmError::Connect { url: url.clone(), detail: "the API key has characters a header cannot carry".into() })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let response = self.http.post(&url).headers(headers).json(&body).send().await.map_err(|e| self.transport_error(&url, e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|e| self.transport_error(&url, e))?;
        if !status.is_success() {
            return Err(LlmError::Http { status: status.as_u16(), retry_after, body: cut(&String::from_utf8_lossy(&bytes), 300) });
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::Malformed(format!("not JSON ({e}): {}", cut(&String::from_utf8_lossy(&bytes), 120))))?;
        match self.settings.provider {
            Provider::Anthropic => anthropic::parse(&value),
            _ => openai::parse(&value),
        }
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.settings.request_timeout)
        } else if e.is_decode() || e.is_body() {
            LlmError::Malformed(format!("the answer was cut off: {e}"))
        } else {
            // The innermost cause says what happened ("Connection refused"), the outer ones don't.
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                detail = s.to_string();
                source = s.source();
            }
            LlmError::Connect { url: url.to_string(), detail }
        }
    }
}

fn unreachable_replay() -> Result<(String, serde_json::Value, HeaderMap), LlmError> {
    Err(LlmError::RecordingFile { path: String::new(), detail: "replay has no HTTP endpoint".into() })
}

/// `Retry-After` in seconds, or `retry-after-ms` (OpenAI sends it) in milliseconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    get("retry-after").and_then(|v| v.parse::<f64>().ok()).and_then(|s| Duration::try_from_secs_f64(s).ok())
}

fn cut(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, RetryPolicy, Role};
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn request(tag: &str) -> ChatRequest {
        ChatRequest {
            tag: tag.into(),
            system: "sys".into(),
            messages: vec![ChatMessage { role: Role::User, content: "write tests".into() }],
            max_tokens: 64,
            temperature: 0.0,
        }
    }

    fn settings(provider: Provider, url: String) -> LlmSettings {
        LlmSettings {
            provider,
            url,
            model: "m".into(),
            request_timeout: Duration::from_millis(500),
            retry: RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20) },
            replay: None,
            record: None,
        }
    }

    fn ok_body(text: &str) -> serde_json::Value {
        serde_json::json!({"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    }

    #[tokio::test]
    async fn retries_429_honouring_retry_after_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
            .up_to_n_times(1).mount(&server).await;
        Mock::given(method("POST")).and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("hi")))
            .mount(&server).await;
        let client = LlmClient::new(settings(Provider::OpenAi, format!("{}/v1", server.uri())), None).unwrap();
        let started = std::time::Instant::now();
        let r = client.complete(&request("t"), &CancellationToken::new()).await.unwrap();
        assert_eq!((r.text.as_str(), r.attempts, r.tokens_in), ("hi", 2, 7));
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
            .expect(1).mount(&server).await;
        let client = LlmClient::new(settings(Provider::OpenAi, server.uri()), None).unwrap();
        let err = client.complete(&request("t"), &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, LlmError::Http { status: 401, .. }), "{err}");
    }

    #[tokio::test]
    async fn server_errors_slow_answers_and_garbage_exhaust_the_attempts() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).expect(3).mount(&server).await;
        let client = LlmClient::new(settings(Provider::OpenAi, server.uri()), None).unwrap();
        let err = client.complete(&request("t"), &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, LlmError::Http { status: 503, .. }));

        let slow = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_json(ok_body("late")).set_delay(Duration::from_secs(3)))
            .mount(&slow).await;
        let client = LlmClient::new(settings(Provider::OpenAi, slow.uri()), None).unwrap();
        assert!(matches!(client.complete(&request("t"), &CancellationToken::new()).await, Err(LlmError::Timeout(_))));

        let garbage = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_string("{\"choices\": ["))
            .expect(3).mount(&garbage).await;
        let client = LlmClient::new(settings(Provider::OpenAi, garbage.uri()), None).unwrap();
        assert!(matches!(client.complete(&request("t"), &CancellationToken::new()).await, Err(LlmError::Malformed(_))));
    }

    #[tokio::test]
    async fn connection_refused_names_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/v1");
        let client = LlmClient::new(settings(Provider::OpenAi, url.clone()), None).unwrap();
        let err = client.complete(&request("t"), &CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, LlmError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[tokio::test]
    async fn cancellation_interrupts_a_retry_wait() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30")).mount(&server).await;
        let client = LlmClient::new(settings(Provider::OpenAi, server.uri()), None).unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.cancel();
        });
        let started = std::time::Instant::now();
        assert!(matches!(client.complete(&request("t"), &cancel).await, Err(LlmError::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn anthropic_headers_and_key() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).and(path("/v1/messages")).and(header("x-api-key", "k1")).and(header("anthropic-version", "2023-06-01"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"content": [{"type": "text", "text": "ok"}], "usage": {"input_tokens": 1, "output_tokens": 2}})))
            .expect(1).mount(&server).await;
        let client = LlmClient::new(settings(Provider::Anthropic, server.uri()), Some(ApiKey::new("k1".into()))).unwrap();
        let r = client.complete(&request("t"), &CancellationToken::new()).await.unwrap();
        assert_eq!(r.text, "ok");
    }

    #[tokio::test]
    async fn record_then_replay_by_tag_without_the_key() {
        let server = MockServer::start().await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_json(ok_body("first"))).up_to_n_times(1).mount(&server).await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200).set_body_json(ok_body("second"))).mount(&server).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rec.json");
        let mut s = settings(Provider::OpenAi, server.uri());
        s.record = Some(file.clone());
        let client = LlmClient::new(s, Some(ApiKey::new("sk-SECRET-xyz".into()))).unwrap();
        client.complete(&request("a"), &CancellationToken::new()).await.unwrap();
        client.complete(&request("b"), &CancellationToken::new()).await.unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("SECRET"), "{text}");

        let mut s = settings(Provider::Replay, String::new());
        s.replay = Some(file);
        let replay = LlmClient::new(s, None).unwrap();
        let cancel = CancellationToken::new();
        assert_eq!(replay.complete(&request("b"), &cancel).await.unwrap().text, "second");
        assert_eq!(replay.complete(&request("zzz"), &cancel).await.unwrap().text, "first");
        assert!(matches!(replay.complete(&request("a"), &cancel).await, Err(LlmError::ReplayExhausted { .. })));
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }
}
