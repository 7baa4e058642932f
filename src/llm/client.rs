//! The client every caller uses: it picks the backend once (a wire format over HTTP, or a
//! recording), turns HTTP failures into typed [`LlmError`]s in one function for every wire
//! format, and holds the only retry loop, so the retry decision is made on types, not strings.
//! It never asks which wire format it speaks: that is all behind [`WireFormat`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::record::{Recorder, Replayer};
use super::runaway::{Stop, Watcher, estimate_tokens};
use super::wire::{Event, Streamed, WireFormat, cut};
use super::{
    ApiKey, ChatRequest, ChatResponse, EarlyStop, LlmError, LlmSettings, Provider, RetryPolicy,
    ServerSpeed, SpeedSource, sse, wire_format,
};

/// Longest error body kept in an [`LlmError::Http`]: enough for the server's explanation,
/// short enough for a log line and the state file.
const ERROR_BODY_CHARS: usize = 500;

/// A completion is a few hundred KB at most; a server streaming more is broken, and reading it
/// all would only exhaust memory.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Connecting should take well under this even to a remote API; a long request timeout (slow
/// local models) should not make a dead host take as long to notice.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct LlmClient {
    provider: Provider,
    model: String,
    retry: RetryPolicy,
    backend: Backend,
    recorder: Option<Recorder>,
}

/// Where answers come from. Replay is not a wire format: it sends nothing, so it has no URL,
/// headers, retries or recording, and answers by tag from a file.
enum Backend {
    Http(Http),
    Replay(Replayer),
}

/// Everything needed to send one request, fixed at construction so a bad URL or key fails
/// before the first call rather than on every retry.
struct Http {
    client: reqwest::Client,
    wire: &'static dyn WireFormat,
    endpoint: String,
    /// The endpoint as errors show it: without a password, should the URL carry one.
    shown_url: String,
    headers: HeaderMap,
    timeout: Duration,
    /// Kept only to scrub it from error bodies a server may echo it in.
    key: Option<ApiKey>,
    /// Answers are asked for as a stream until the server shows it cannot stream (a whole
    /// answer to a streamed request, or a 4xx that names `stream`): from then on, for the rest
    /// of the run, they are asked for whole.
    streams: AtomicBool,
}

/// The request body both ways, serialised once per call and resent as is on every attempt.
struct Bodies {
    streamed: Vec<u8>,
    whole: Vec<u8>,
}

/// Whether `url` names this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl LlmClient {
    pub fn new(settings: LlmSettings, key: Option<ApiKey>) -> Result<LlmClient, LlmError> {
        // An empty env var is "no key": sending `Bearer ` would only earn a 401 from a local
        // server that needs none.
        let key = key.filter(|k| !k.expose().trim().is_empty());
        let backend = match wire_format(settings.provider) {
            Some(wire) => Backend::Http(Http::new(wire, &settings, key)?),
            None => {
                let path = settings.replay.as_deref().ok_or_else(|| {
                    LlmError::Config(
                        "--provider replay needs --replay FILE (a file written by --record)".into(),
                    )
                })?;
                Backend::Replay(Replayer::open(path)?)
            }
        };
        // Replayed answers are not recorded again: the recording would only copy itself.
        let recorder = match (&backend, &settings.record) {
            (Backend::Http(_), Some(path)) => Some(Recorder::open(path)?),
            _ => None,
        };
        Ok(LlmClient {
            provider: settings.provider,
            model: settings.model,
            retry: settings.retry,
            backend,
            recorder,
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the answers come from this machine (a server on a loopback address, or a
    /// recording): a call cut short there wastes nothing anybody pays for.
    pub fn is_local(&self) -> bool {
        match &self.backend {
            Backend::Replay(_) => true,
            Backend::Http(http) => is_loopback(&http.endpoint),
        }
    }

    /// One answer, after as many attempts as the policy allows. Only retryable failures are
    /// tried again; cancellation wins over a request in flight and over a wait between attempts.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, LlmError> {
        if cancel.is_cancelled() {
            return Err(LlmError::Cancelled);
        }
        let http = match &self.backend {
            Backend::Replay(replayer) => return replayer.answer(req),
            Backend::Http(http) => http,
        };
        let bodies = http.bodies(&self.model, req)?;
        let max_attempts = self.retry.attempts();
        let mut attempt = 1;
        loop {
            tracing::debug!(provider = self.provider.as_str(), model = %self.model, tag = %req.tag, attempt, "LLM request");
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(LlmError::Cancelled),
                r = http.send(&bodies, req) => r,
            };
            match result {
                Ok(mut response) => {
                    response.attempts = attempt;
                    tracing::debug!(
                        tag = %req.tag,
                        attempt,
                        tokens_in = response.tokens_in,
                        tokens_out = response.tokens_out,
                        finish_reason = response.finish_reason.as_deref().unwrap_or(""),
                        stopped = response.stopped.map_or("", |s| s.reason.as_str()),
                        "LLM answer"
                    );
                    // A recording that cannot be written must not cost the answer we paid for.
                    if let Some(recorder) = &self.recorder
                        && let Err(e) = recorder.append(self.provider, &self.model, req, &response)
                    {
                        tracing::warn!("the answer was not recorded: {e}");
                    }
                    return Ok(response);
                }
                Err(e) if e.is_retryable() && attempt < max_attempts => {
                    let wait = self.retry.delay_before_retry(attempt, e.retry_after());
                    tracing::warn!(
                        provider = self.provider.as_str(),
                        tag = %req.tag,
                        error = %e.kind(),
                        attempt,
                        max_attempts,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "LLM call failed; retrying"
                    );
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(LlmError::Cancelled),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(tag = %req.tag, error = %e.kind(), attempt, "LLM call failed for good");
                    return Err(e);
                }
            }
        }
    }
}

impl Http {
    fn new(
        wire: &'static dyn WireFormat,
        settings: &LlmSettings,
        key: Option<ApiKey>,
    ) -> Result<Http, LlmError> {
        let endpoint = wire.endpoint(&settings.url);
        let mut url = reqwest::Url::parse(&endpoint).map_err(|e| {
            LlmError::Config(format!("the LLM URL `{}` is not a URL: {e}", settings.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Config(format!(
                "the LLM URL `{}` must start with http:// or https://",
                settings.url
            )));
        }
        if url.password().is_some() {
            // Infallible for http(s) URLs, which always have a host.
            let _ = url.set_password(Some("***"));
        }
        if settings.request_timeout.is_zero() {
            return Err(LlmError::Config(
                "the LLM request timeout must be above zero".into(),
            ));
        }

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in wire.fixed_headers() {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        if let Some(key) = &key {
            let (name, value) = wire.key_header(key.expose());
            // The error must not quote the value: it is the key.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::Config("the API key has characters an HTTP header cannot carry".into())
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }

        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("improve/", env!("CARGO_PKG_VERSION")))
            // A redirect to another host would carry `x-api-key` along (reqwest only strips
            // `authorization`); an LLM endpoint has no business redirecting a POST anyway.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LlmError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Http {
            client,
            wire,
            endpoint,
            shown_url: url.to_string(),
            headers,
            timeout: settings.request_timeout,
            key,
            streams: AtomicBool::new(true),
        })
    }

    fn bodies(&self, model: &str, req: &ChatRequest) -> Result<Bodies, LlmError> {
        let encode = |stream| {
            self.wire
                .body(model, req, stream)
                .map_err(|e| LlmError::Config(format!("cannot encode the request: {e}")))
        };
        Ok(Bodies {
            streamed: encode(true)?,
            whole: encode(false)?,
        })
    }

    /// One attempt: streamed while the server streams, else whole.
    async fn send(&self, bodies: &Bodies, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        if self.streams.load(Ordering::Relaxed) {
            match self.stream(bodies.streamed.clone(), req).await {
                Err(e) if refuses_streaming(&e) => {
                    self.no_streaming(&format!("it refused a streamed request: {e}"));
                }
                other => return other,
            }
        }
        let value = self.post(bodies.whole.clone()).await?;
        self.wire.parse(&value)
    }

    fn no_streaming(&self, why: &str) {
        if self.streams.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "the LLM server does not stream ({why}); answers are asked for whole from now on"
            );
        }
    }

    /// A streamed answer, read event by event and stopped as soon as the watcher says it can
    /// give no new test: dropping the response closes the connection, and the server stops
    /// writing. A server that answers whole instead is read as before (and not asked to
    /// stream again).
    async fn stream(&self, body: Vec<u8>, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let mut response = self.request(body).await?;
        let said_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        let first = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?;
        let looks_sse = first.as_ref().is_some_and(|c| {
            let head = String::from_utf8_lossy(&c[..c.len().min(16)]);
            let head = head.trim_start();
            head.starts_with("data:") || head.starts_with("event:") || head.starts_with(':')
        });
        if !said_sse && !looks_sse {
            self.no_streaming("it answered a streamed request whole");
            let mut bytes = first.map(|c| c.to_vec()).unwrap_or_default();
            bytes.extend(self.read_rest(&mut response, bytes.len()).await?);
            return self.wire.parse(&self.json(&bytes)?);
        }
        let mut parser = sse::Parser::default();
        let mut acc = Streamed::default();
        let mut watcher = Watcher::new();
        let mut clock = Clock {
            started,
            first_text: None,
            last_text: None,
        };
        let mut read = 0usize;
        let mut next = first;
        while let Some(chunk) = next {
            read += chunk.len();
            if read > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            for event in parser.push(&chunk) {
                match self.take(&event, &mut acc, &mut watcher, &mut clock)? {
                    None => {}
                    Some(End::Done) => return Ok(finished(req, acc, &clock)),
                    Some(End::Stop(stop)) => {
                        // Closes the connection: the server stops writing the answer.
                        drop(response);
                        return Ok(stopped(req, acc, stop, &clock));
                    }
                }
            }
            next = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(e))?;
        }
        // The body is over: an event not followed by its blank line is one still.
        if let Some(event) = parser.finish() {
            match self.take(&event, &mut acc, &mut watcher, &mut clock)? {
                None | Some(End::Done) => {}
                Some(End::Stop(stop)) => return Ok(stopped(req, acc, stop, &clock)),
            }
        }
        // Ended without the format's last event: whole only if the server said why it ended
        // (some servers close after their last chunk without `[DONE]`).
        if acc.finish_reason.is_some() {
            return Ok(finished(req, acc, &clock));
        }
        Err(LlmError::Malformed(
            "the stream ended before the answer did".into(),
        ))
    }

    /// One event into the answer; how it ends, when this event ends it.
    fn take(
        &self,
        event: &sse::Event,
        acc: &mut Streamed,
        watcher: &mut Watcher,
        clock: &mut Clock,
    ) -> Result<Option<End>, LlmError> {
        let before = acc.text.len();
        let step = self.wire.event(event.name.as_deref(), &event.data, acc)?;
        if acc.text.len() > before {
            let now = Instant::now();
            clock.first_text.get_or_insert(now);
            clock.last_text = Some(now);
            if let Some(stop) = watcher.push(&acc.text[before..]) {
                return Ok(Some(End::Stop(stop)));
            }
        }
        Ok((step == Event::Done).then_some(End::Done))
    }

    /// A whole answer as JSON.
    async fn post(&self, body: Vec<u8>) -> Result<serde_json::Value, LlmError> {
        let mut response = self.request(body).await?;
        let bytes = self.read_rest(&mut response, 0).await?;
        self.json(&bytes)
    }

    fn json(&self, bytes: &[u8]) -> Result<serde_json::Value, LlmError> {
        serde_json::from_slice(bytes).map_err(|e| {
            LlmError::Malformed(format!("not JSON ({e}): {}", self.snippet(bytes, 120)))
        })
    }

    /// The rest of a 2xx body, `already` bytes of it read.
    async fn read_rest(
        &self,
        response: &mut reqwest::Response,
        already: usize,
    ) -> Result<Vec<u8>, LlmError> {
        read_capped(response, already).await.map_err(|e| match e {
            ReadError::Transport(e) => self.transport_error(e),
            ReadError::TooLarge => too_large(),
        })
    }

    /// The HTTP exchange every wire format shares, up to the body. Non-2xx is
    /// [`LlmError::Http`] with the server's Retry-After and a cut, key-scrubbed body; transport
    /// failures are `Timeout` or `Connect`.
    async fn request(&self, body: Vec<u8>) -> Result<reqwest::Response, LlmError> {
        let mut response = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        if !status.is_success() {
            // The status is the news; an error body that fails to arrive should not hide it.
            let bytes = read_capped(&mut response, 0).await.unwrap_or_default();
            return Err(LlmError::Http {
                status: status.as_u16(),
                retry_after,
                body: self.snippet(&bytes, ERROR_BODY_CHARS),
            });
        }
        Ok(response)
    }

    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.timeout)
        } else if e.is_builder() {
            LlmError::Config(root_cause(&e))
        } else if e.is_body() || e.is_decode() {
            // The connection broke mid-answer: a proxy or server hiccup, worth another try.
            LlmError::Malformed(format!("the answer was cut off: {}", root_cause(&e)))
        } else {
            LlmError::Connect {
                url: self.shown_url.clone(),
                detail: root_cause(&e),
            }
        }
    }

    /// A body fit for an error message: one line, cut, and with the key scrubbed out (some
    /// servers quote the key they rejected).
    fn snippet(&self, bytes: &[u8], max_chars: usize) -> String {
        let text = String::from_utf8_lossy(bytes);
        let scrubbed = match &self.key {
            Some(key) => text.replace(key.expose(), "[hidden]"),
            None => text.into_owned(),
        };
        cut(&scrubbed, max_chars)
    }
}

enum ReadError {
    Transport(reqwest::Error),
    TooLarge,
}

fn too_large() -> LlmError {
    LlmError::Malformed(format!(
        "the answer is larger than {MAX_ANSWER_BYTES} bytes"
    ))
}

/// A server that cannot stream says so with a 4xx naming the parameter (`stream` unknown or
/// unsupported); asked without it, the same request can succeed.
fn refuses_streaming(e: &LlmError) -> bool {
    match e {
        LlmError::Http { status, body, .. } => {
            (400..500).contains(status)
                && !matches!(status, 408 | 429)
                && !e.is_context_length()
                && body.to_ascii_lowercase().contains("stream")
        }
        _ => false,
    }
}

/// How a stream ends before its body does.
enum End {
    /// The format's last event.
    Done,
    /// The watcher's stop.
    Stop(Stop),
}

/// When a streamed answer's text began and last grew, for the speed the client measures.
struct Clock {
    started: Instant,
    first_text: Option<Instant>,
    last_text: Option<Instant>,
}

impl Clock {
    /// Prompt tokens over the seconds to the first text; answer tokens over the seconds from
    /// the first text to the last.
    fn speed(&self, tokens_in: u64, tokens_out: u64) -> Option<ServerSpeed> {
        let first = self.first_text?;
        let per_second =
            |tokens: u64, secs: f64| (tokens > 0 && secs > 0.0).then(|| tokens as f64 / secs);
        let reading = first.duration_since(self.started).as_secs_f64();
        let writing = self
            .last_text
            .map_or(0.0, |last| last.duration_since(first).as_secs_f64());
        Some(ServerSpeed {
            prompt_per_second: per_second(tokens_in, reading),
            // The first token came with the first text: the seconds after it wrote the rest.
            generated_per_second: per_second(tokens_out.saturating_sub(1), writing),
            source: SpeedSource::Measured,
        })
    }
}

/// The prompt's tokens, estimated, for a server that has not said (a stream stopped early).
fn prompt_estimate(req: &ChatRequest) -> u64 {
    estimate_tokens(&req.system)
        + req
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum::<u64>()
}

/// A stream read to its end.
fn finished(req: &ChatRequest, acc: Streamed, clock: &Clock) -> ChatResponse {
    let tokens_in = acc.tokens_in.unwrap_or_else(|| prompt_estimate(req));
    let tokens_out = acc
        .tokens_out
        .unwrap_or_else(|| acc.deltas.max(estimate_tokens(&acc.text)));
    ChatResponse {
        speed: acc.speed.or_else(|| clock.speed(tokens_in, tokens_out)),
        text: acc.text,
        tokens_in,
        tokens_out,
        finish_reason: acc.finish_reason,
        attempts: 1,
        stopped: None,
        cached_tokens: acc.cached_tokens,
        cache_write_tokens: acc.cache_write_tokens,
    }
}

/// A stream stopped by the watcher: the text it kept, the tokens received so far (the server
/// has not counted them yet), and those the stop saved against the request's cap.
fn stopped(req: &ChatRequest, acc: Streamed, stop: Stop, clock: &Clock) -> ChatResponse {
    let tokens_in = acc.tokens_in.unwrap_or_else(|| prompt_estimate(req));
    let received = acc
        .tokens_out
        .unwrap_or(0)
        .max(acc.deltas.max(estimate_tokens(&acc.text)));
    // After a closed code block only prose would have followed, of a length no one knows:
    // nothing is claimed for it. A runaway would have gone on to the cap.
    let saved = if stop.reason.is_runaway() {
        u64::from(req.max_tokens).saturating_sub(received)
    } else {
        0
    };
    tracing::info!(
        tag = %req.tag,
        reason = stop.reason.as_str(),
        tokens_received = received,
        tokens_saved = saved,
        "stopped the answer: it can give no new test"
    );
    ChatResponse {
        speed: acc.speed.or_else(|| clock.speed(tokens_in, received)),
        text: stop.text,
        tokens_in,
        tokens_out: received,
        finish_reason: None,
        attempts: 1,
        stopped: Some(EarlyStop {
            reason: stop.reason,
            tokens_received: received,
            tokens_saved: saved,
        }),
        cached_tokens: acc.cached_tokens,
        cache_write_tokens: acc.cache_write_tokens,
    }
}

async fn read_capped(
    response: &mut reqwest::Response,
    already: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if already + bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ReadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The innermost cause says what happened ("Connection refused"); the outer layers only say
/// that something did, and name the URL, which the error already carries.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// How long the server asked us to wait: `retry-after-ms` (OpenAI sends it, and it is the more
/// precise), else `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && let Ok(d) = Duration::try_from_secs_f64(ms / 1000.0)
    {
        return Some(d);
    }
    let value = get("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    // A date already past means "now".
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, Role};
    use std::time::Instant;
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const _: () = {
        const fn shared_across_tasks<T: Send + Sync + 'static>() {}
        shared_across_tasks::<LlmClient>();
    };

    fn request(tag: &str) -> ChatRequest {
        ChatRequest {
            tag: tag.into(),
            system: "sys".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: format!("write tests for {tag}"),
            }],
            max_tokens: 64,
            temperature: 0.0,
            cache_prefix: false,
        }
    }

    fn fast_policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        }
    }

    fn settings(provider: Provider, url: String) -> LlmSettings {
        LlmSettings {
            provider,
            url,
            model: "m".into(),
            request_timeout: Duration::from_secs(5),
            retry: fast_policy(3),
            replay: None,
            record: None,
        }
    }

    fn openai(url: String) -> LlmClient {
        LlmClient::new(settings(Provider::OpenAi, url), None).unwrap()
    }

    fn ok_body(text: &str) -> serde_json::Value {
        serde_json::json!({"choices": [{"message": {"content": text}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    }

    async fn complete(client: &LlmClient) -> Result<ChatResponse, LlmError> {
        client
            .complete(&request("t"), &CancellationToken::new())
            .await
    }

    #[tokio::test]
    async fn a_429_honours_retry_after_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "1")
                    .set_body_string("slow down"),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("hi")))
            .mount(&server)
            .await;
        let started = Instant::now();
        let r = complete(&openai(server.uri())).await.unwrap();
        assert_eq!(
            (r.text.as_str(), r.attempts, r.tokens_in, r.tokens_out),
            ("hi", 2, 7, 3)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "waited only {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn two_503s_then_success_takes_three_attempts() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
            .up_to_n_times(2)
            .expect(2)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("third time")))
            .expect(1)
            .mount(&server)
            .await;
        let r = complete(&openai(server.uri())).await.unwrap();
        assert_eq!((r.text.as_str(), r.attempts), ("third time", 3));
        server.verify().await;
    }

    #[tokio::test]
    async fn server_errors_exhaust_the_attempts_and_keep_the_status() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(500).set_body_string(format!("boom {}", "x".repeat(2000))),
            )
            .expect(3)
            .mount(&server)
            .await;
        let err = complete(&openai(server.uri())).await.unwrap_err();
        let LlmError::Http {
            status: 500, body, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(
            body.starts_with("boom x") && body.chars().count() <= ERROR_BODY_CHARS + 3,
            "{} chars",
            body.len()
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn a_400_is_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_string("max_tokens too large"))
            .expect(1)
            .mount(&server)
            .await;
        let err = complete(&openai(server.uri())).await.unwrap_err();
        assert!(
            matches!(&err, LlmError::Http { status: 400, body, .. } if body == "max_tokens too large"),
            "{err:?}"
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn a_401_is_not_retried_and_the_echoed_key_is_scrubbed() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(401)
                    .set_body_string("Incorrect API key provided: sk-very-secret-1"),
            )
            .expect(1)
            .mount(&server)
            .await;
        let client = LlmClient::new(
            settings(Provider::OpenAi, server.uri()),
            Some(ApiKey::new("sk-very-secret-1".into())),
        )
        .unwrap();
        let err = complete(&client).await.unwrap_err();
        assert!(matches!(err, LlmError::Http { status: 401, .. }), "{err:?}");
        assert!(!err.to_string().contains("sk-very-secret-1"), "{err}");
        assert!(err.to_string().contains("[hidden]"), "{err}");
        server.verify().await;
    }

    #[tokio::test]
    async fn a_slow_server_times_out_on_every_attempt() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(ok_body("late"))
                    .set_delay(Duration::from_secs(2)),
            )
            .expect(2)
            .mount(&server)
            .await;
        let mut s = settings(Provider::OpenAi, server.uri());
        s.request_timeout = Duration::from_millis(200);
        s.retry = fast_policy(2);
        let started = Instant::now();
        let err = complete(&LlmClient::new(s, None).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::Timeout(d) if d == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn a_truncated_json_answer_is_malformed_and_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{\"choices\": ["))
            .expect(3)
            .mount(&server)
            .await;
        let err = complete(&openai(server.uri())).await.unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{err:?}");
        server.verify().await;
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error_naming_the_url() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/v1");
        let err = complete(&openai(url.clone())).await.unwrap_err();
        let LlmError::Connect { url: shown, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(shown, &format!("{url}/chat/completions"));
        assert!(err.to_string().contains(&url), "{err}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn cancelling_during_a_retry_wait_returns_promptly() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
            .expect(1)
            .mount(&server)
            .await;
        let client = openai(server.uri());
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let result = client.complete(&request("t"), &cancel).await;
        assert!(matches!(result, Err(LlmError::Cancelled)), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        server.verify().await;
    }

    #[tokio::test]
    async fn cancelling_during_a_request_returns_promptly() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(ok_body("late"))
                    .set_delay(Duration::from_secs(10)),
            )
            .mount(&server)
            .await;
        let client = openai(server.uri());
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let result = client.complete(&request("t"), &cancel).await;
        assert!(matches!(result, Err(LlmError::Cancelled)), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Already cancelled: nothing is sent at all.
        let before = server.received_requests().await.unwrap().len();
        assert!(matches!(
            client.complete(&request("t"), &cancel).await,
            Err(LlmError::Cancelled)
        ));
        assert_eq!(server.received_requests().await.unwrap().len(), before);
    }

    #[tokio::test]
    async fn record_then_replay_by_tag_without_the_key() {
        let server = MockServer::start().await;
        for (tag, text) in [("add:a.py", "answer A"), ("add:b.py", "answer B")] {
            Mock::given(method("POST"))
                .and(body_string_contains(format!("write tests for {tag}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(ok_body(text)))
                .expect(1)
                .mount(&server)
                .await;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rec.json");
        let mut s = settings(Provider::OpenAi, server.uri());
        s.record = Some(file.clone());
        let recording = LlmClient::new(s, Some(ApiKey::new("sk-SECRET-xyz".into()))).unwrap();
        let cancel = CancellationToken::new();
        assert_eq!(
            recording
                .complete(&request("add:a.py"), &cancel)
                .await
                .unwrap()
                .text,
            "answer A"
        );
        assert_eq!(
            recording
                .complete(&request("add:b.py"), &cancel)
                .await
                .unwrap()
                .text,
            "answer B"
        );
        server.verify().await;

        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("sk-SECRET-xyz") && !text.contains("SECRET"),
            "{text}"
        );
        let saved = crate::llm::Recording::load(&file).unwrap();
        let tags: Vec<_> = saved.exchanges.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, ["add:a.py", "add:b.py"]);

        let mut s = settings(Provider::Replay, String::new());
        s.replay = Some(file.clone());
        // Replaying with --record set must not rewrite the recording it reads.
        s.record = Some(file.clone());
        let replay = LlmClient::new(s, None).unwrap();
        assert_eq!(replay.provider(), Provider::Replay);
        let b = replay
            .complete(&request("add:b.py"), &cancel)
            .await
            .unwrap();
        assert_eq!(
            (b.text.as_str(), b.tokens_in, b.tokens_out, b.attempts),
            ("answer B", 7, 3, 1)
        );
        assert_eq!(
            replay
                .complete(&request("add:a.py"), &cancel)
                .await
                .unwrap()
                .text,
            "answer A"
        );
        let err = replay
            .complete(&request("add:a.py"), &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::ReplayExhausted { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            2,
            "replay must not touch the network"
        );
    }

    #[tokio::test]
    async fn an_unwritable_recording_keeps_the_answer() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("x")))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("sub");
        let mut s = settings(Provider::OpenAi, server.uri());
        s.record = Some(folder.join("rec.json"));
        let client = LlmClient::new(s, None).unwrap();
        // The folder becomes a file after start-up, so the first save cannot happen.
        std::fs::write(&folder, "").unwrap();
        let answer = complete(&client).await.unwrap();
        assert_eq!(answer.text, "x");
        assert!(std::fs::read_to_string(&folder).unwrap().is_empty());
    }

    #[test]
    fn loopback_urls_are_this_machine() {
        for url in [
            "http://127.0.0.1:18080/v1",
            "http://localhost:8080/v1",
            "http://[::1]:1/v1",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://api.openai.com/v1",
            "http://10.0.0.1/v1",
            "not a url",
            "http://localhost.example.com/",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn unusable_settings_fail_at_construction() {
        let build = |provider, url: &str, key: Option<&str>| {
            LlmClient::new(
                settings(provider, url.into()),
                key.map(|k| ApiKey::new(k.into())),
            )
        };
        for url in ["", "localhost:8080", "ftp://example.com/v1"] {
            assert!(
                matches!(build(Provider::OpenAi, url, None), Err(LlmError::Config(_))),
                "{url:?}"
            );
        }
        let err = build(
            Provider::Anthropic,
            "http://127.0.0.1:1",
            Some("sk-line\nbreak"),
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, LlmError::Config(_)) && !err.to_string().contains("sk-line"),
            "{err}"
        );
        let err = build(Provider::Replay, "", None).err().unwrap();
        assert!(
            matches!(err, LlmError::Config(_)) && err.to_string().contains("--replay"),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), "config");

        let client = build(Provider::OpenAi, "http://user:pw@127.0.0.1:1/v1", None).unwrap();
        let Backend::Http(http) = &client.backend else {
            unreachable!()
        };
        assert_eq!(
            http.shown_url,
            "http://user:***@127.0.0.1:1/v1/chat/completions"
        );
        assert_eq!((client.provider(), client.model()), (Provider::OpenAi, "m"));
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            h
        };
        let at = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(at(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            at(&[("retry-after", " 1.5 ")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            at(&[("retry-after-ms", "250"), ("retry-after", "7")]),
            Some(Duration::from_millis(250))
        );
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            at(&[("retry-after", &in_90s)]),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(at(&[("retry-after", &past)]), Some(Duration::ZERO));
        assert_eq!(at(&[("retry-after", "-3")]), None);
        assert_eq!(at(&[("retry-after", "soon")]), None);
        assert_eq!(at(&[]), None);
    }
}
