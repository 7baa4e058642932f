//! The LLM layer: one client that speaks to an OpenAI-compatible server, Anthropic's messages
//! API, or a recorded file, with the retry policy in exactly one place (`retry.rs`). Each wire
//! format is one implementation of [`wire::WireFormat`]; the client never asks which one it has.
//!
//! Everything above this module sees only [`LlmClient::complete`]: a request goes in, text and
//! token usage come out, or a classified [`LlmError`] that says whether trying again could help.

mod anthropic;
mod client;
mod openai;
mod record;
mod retry;
mod runaway;
mod sse;
mod wire;

pub use client::{LlmClient, is_loopback};
pub use record::{Exchange, RecordedResponse, Recording};
pub use retry::RetryPolicy;
pub use runaway::StopReason;

/// Which wire format the client speaks (saved with the run, so declared with the settings).
pub use crate::schema::Provider;
use wire::WireFormat;

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// One conversation turn to send. `tag` is not sent: it names what the call is for
/// (e.g. `add:inventory/pricing.py`) so that a recording can be replayed by purpose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub tag: String,
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Not sent as such: the first user turn (the module and the examples) will be sent again
    /// (repair rounds may follow), so a server with an explicit prompt cache (Anthropic) is
    /// asked to keep it. Requests saved before it was recorded have it false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// `stop`, `length` (OpenAI) / `end_turn`, `max_tokens` (Anthropic), as the server said it.
    pub finish_reason: Option<String>,
    /// How many HTTP attempts this answer took (1 when the first one succeeded).
    #[serde(default = "one")]
    pub attempts: u32,
    /// Set when the answer was stopped while streaming, because it could give no new test
    /// (`text` is then what was kept, its code block closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<EarlyStop>,
    /// How fast the server read the prompt and wrote the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<ServerSpeed>,
    /// Prompt tokens the server's cache served (llama.cpp `cache_n`, OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the server's cache (Anthropic `cache_creation_input_tokens`).
    /// Like `cached_tokens`, counted in `tokens_in` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

/// An answer stopped early: why, and what it cost against what it would have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyStop {
    pub reason: StopReason,
    /// Answer tokens received before the stop (estimated when the server had not said yet).
    pub tokens_received: u64,
    /// Answer tokens not paid for, for a runaway: the request's `max_tokens` less those
    /// received (an upper bound: the model might have ended sooner by itself). 0 for a stop
    /// after the code block closed: only prose of unknown length would have followed.
    pub tokens_saved: u64,
}

/// Tokens per second, each side when known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerSpeed {
    /// Prompt tokens read per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_per_second: Option<f64>,
    /// Answer tokens written per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_per_second: Option<f64>,
    pub source: SpeedSource,
}

impl ServerSpeed {
    /// The reading speed in tokens of `budget_chars` characters, for a tokenizer whose tokens
    /// hold `server_chars` characters of the prompt: Qwen's hold fewer characters of code than
    /// the budget counts, so it reads fewer budget tokens a second than it says.
    pub fn in_budget_tokens(self, server_chars: f64, budget_chars: f64) -> ServerSpeed {
        ServerSpeed {
            prompt_per_second: self
                .prompt_per_second
                .map(|r| r * server_chars / budget_chars),
            ..self
        }
    }
}

/// Where a [`ServerSpeed`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedSource {
    /// The server's own measure (llama.cpp's `timings`).
    Server,
    /// Tokens over the seconds to the first byte of the answer (prompt) and from its first to
    /// its last byte (answer), as the client saw them.
    Measured,
}

fn one() -> u32 {
    1
}

impl ChatResponse {
    /// The server cut the answer at the token limit.
    pub fn truncated(&self) -> bool {
        matches!(
            self.finish_reason.as_deref(),
            Some("length") | Some("max_tokens")
        )
    }
}

/// Settings to build a client from; secrets are passed separately and never stored.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub provider: Provider,
    /// Base URL: for OpenAI it ends before `/chat/completions`; for Anthropic before `/v1/messages`.
    pub url: String,
    pub model: String,
    /// Per-attempt timeout of one HTTP request.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// `--replay FILE`: answer from this recording instead of the network.
    pub replay: Option<std::path::PathBuf>,
    /// `--record FILE`: append every exchange to this recording.
    pub record: Option<std::path::PathBuf>,
}

/// An API key. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(value: String) -> Self {
        ApiKey(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([hidden])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM server answered HTTP {status}: {body}")]
    Http {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    #[error(
        "could not reach the LLM server at {url}: {detail} (check --llm-url and that the server is running)"
    )]
    Connect { url: String, detail: String },
    #[error("the LLM server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the LLM server's answer could not be read: {0}")]
    Malformed(String),
    #[error(
        "the recording {path} has no answer left for `{tag}` (record a longer session or use a real provider)"
    )]
    ReplayExhausted { path: String, tag: String },
    #[error("could not use the recording file {path}: {detail}")]
    RecordingFile { path: String, detail: String },
    #[error("the LLM call was cancelled")]
    Cancelled,
    /// Settings no request could succeed with (an unusable URL or key): found before sending.
    #[error("the LLM settings cannot be used: {0}")]
    Config(String),
}

impl LlmError {
    /// Whether another attempt could succeed: rate limits, server errors, timeouts, broken
    /// connections and unreadable bodies (proxies truncate). Client errors are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            LlmError::Connect { .. } | LlmError::Timeout(_) | LlmError::Malformed(_) => true,
            LlmError::ReplayExhausted { .. }
            | LlmError::RecordingFile { .. }
            | LlmError::Cancelled
            | LlmError::Config(_) => false,
        }
    }

    /// The server refused the prompt as longer than the model's context: OpenAI's
    /// `context_length_exceeded`, llama.cpp's `exceed_context_size_error`, Anthropic's "prompt is
    /// too long", or a 400 / 413 that says as much. A shorter prompt can succeed; the same one
    /// never will.
    pub fn is_context_length(&self) -> bool {
        const SAYS_SO: &[&str] = &[
            "context_length_exceeded",
            "exceed_context_size",
            "exceeds the available context size",
            "prompt is too long",
            "maximum context length",
            "context length",
            "context window",
            "too many tokens",
        ];
        match self {
            LlmError::Http { status, body, .. } if matches!(status, 400 | 413) => {
                let body = body.to_ascii_lowercase();
                *status == 413 || SAYS_SO.iter().any(|s| body.contains(s))
            }
            _ => false,
        }
    }

    /// A delay the server asked for (Retry-After), which wins over the policy's backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, stable label for logs and the state file (`http 429`, `timeout`, ...).
    pub fn kind(&self) -> String {
        match self {
            LlmError::Http { status, .. } => format!("http {status}"),
            LlmError::Connect { .. } => "connect".into(),
            LlmError::Timeout(_) => "timeout".into(),
            LlmError::Malformed(_) => "malformed".into(),
            LlmError::ReplayExhausted { .. } => "replay exhausted".into(),
            LlmError::RecordingFile { .. } => "recording file".into(),
            LlmError::Cancelled => "cancelled".into(),
            LlmError::Config(_) => "config".into(),
        }
    }
}

/// The wire format a provider speaks over HTTP, chosen once when the client is built; `None` for
/// replay, which answers from a recording instead (no HTTP, no retries, nothing to record).
fn wire_format(provider: Provider) -> Option<&'static dyn WireFormat> {
    match provider {
        Provider::OpenAi => Some(&openai::OpenAi),
        Provider::Anthropic => Some(&anthropic::Anthropic),
        Provider::Replay => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tokenizer_with_shorter_tokens_reads_fewer_budget_tokens() {
        let speed = super::ServerSpeed {
            prompt_per_second: Some(60.0),
            generated_per_second: Some(6.0),
            source: super::SpeedSource::Server,
        };
        let scaled = speed.in_budget_tokens(2.0, 3.0);
        assert_eq!(scaled.prompt_per_second, Some(40.0));
        assert_eq!(scaled.generated_per_second, Some(6.0));
    }

    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            tag: "add:a.py".into(),
            system: "sys".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "hi".into(),
            }],
            max_tokens: 64,
            temperature: 0.2,
            cache_prefix: false,
        }
    }

    #[test]
    fn each_http_provider_has_a_wire_format_and_replay_has_none() {
        assert!(wire_format(Provider::Replay).is_none());
        let endpoint = |p| wire_format(p).map(|w| w.endpoint("http://h/v1/"));
        assert_eq!(
            endpoint(Provider::OpenAi).as_deref(),
            Some("http://h/v1/chat/completions")
        );
        assert_eq!(
            endpoint(Provider::Anthropic).as_deref(),
            Some("http://h/v1/v1/messages")
        );
    }

    /// The exact bytes, field order included, so a refactor cannot change what is sent.
    #[test]
    fn bodies_are_byte_for_byte_stable() {
        let body = |p| {
            let wire = wire_format(p).unwrap();
            String::from_utf8(wire.body("m", &request(), false).unwrap()).unwrap()
        };
        let streamed = |p| {
            let wire = wire_format(p).unwrap();
            String::from_utf8(wire.body("m", &request(), true).unwrap()).unwrap()
        };
        assert_eq!(
            streamed(Provider::OpenAi),
            r#"{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            streamed(Provider::Anthropic),
            r#"{"model":"m","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"max_tokens":64,"temperature":0.2,"stream":true}"#
        );
        assert_eq!(
            body(Provider::OpenAi),
            r#"{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":64}"#
        );
        assert_eq!(
            body(Provider::Anthropic),
            r#"{"model":"m","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"max_tokens":64,"temperature":0.2}"#
        );
    }
}
