//! What a wire format is: the one trait an HTTP provider implements (`openai.rs`,
//! `anthropic.rs`). A wire format is data and pure functions: where to POST, which headers, the
//! body (streamed or not), how to read a 2xx answer and how to read one server-sent event of a
//! streamed one. Sending, error classification, Retry-After and retrying
//! are the client's (`client.rs`), the same for every format.
//!
//! Adding a wire format: a file with a unit struct implementing [`WireFormat`], its `mod` line
//! and one arm in [`super::wire_format`], and a [`super::Provider`] variant to name it.

use reqwest::header::HeaderName;
use serde_json::Value;

use super::{ChatRequest, ChatResponse, LlmError, ServerSpeed, SpeedSource};

pub trait WireFormat: Send + Sync {
    /// The URL to POST to, from the base URL the user gave (`--llm-url`, trailing `/` or not).
    fn endpoint(&self, base: &str) -> String;

    /// Headers sent on every request, after `content-type: application/json` and before the key.
    /// Names in lowercase, as `HeaderName::from_static` requires.
    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// The header that carries the API key, and its value (sent only when a key is set).
    fn key_header(&self, key: &str) -> (HeaderName, String);

    /// The request body, serialised once per call and resent as is on every attempt. Bytes
    /// rather than a `serde_json::Value`: a typed body keeps an `f32` temperature of 0.2 as `0.2`
    /// on the wire, where a `Value` would widen it to `0.20000000298023224`.
    /// `stream` asks for server-sent events; without it the bytes are those of before streaming.
    fn body(&self, model: &str, req: &ChatRequest, stream: bool) -> serde_json::Result<Vec<u8>>;

    /// Reads a 2xx answer: text, token usage, stop reason; [`LlmError::Malformed`] when it has
    /// no completion. Non-2xx answers never get here: the client makes them [`LlmError::Http`].
    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError>;

    /// Reads one event of a streamed answer into `acc` (text deltas appended to `acc.text`);
    /// [`Event::Done`] at the format's last event. An error event is an [`LlmError`].
    fn event(&self, name: Option<&str>, data: &str, acc: &mut Streamed) -> Result<Event, LlmError>;
}

/// What a streamed answer said so far.
#[derive(Debug, Default)]
pub struct Streamed {
    pub text: String,
    /// Events that carried text: about one token each from llama.cpp and OpenAI.
    pub deltas: u64,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub finish_reason: Option<String>,
    pub cached_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    /// llama.cpp's `timings`, when the last chunk carried them.
    pub speed: Option<ServerSpeed>,
}

/// Whether a stream goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    More,
    Done,
}

/// An event's data as JSON, or [`LlmError::Malformed`] quoting it.
pub fn event_json(data: &str) -> Result<Value, LlmError> {
    serde_json::from_str(data)
        .map_err(|e| LlmError::Malformed(format!("an event is not JSON ({e}): {}", cut(data, 120))))
}

/// llama.cpp's `timings` (on its last chunk, or beside a whole answer): the server's own
/// measure of its reading and writing speed, and the prompt tokens its cache served.
pub fn llama_timings(value: &Value) -> (Option<ServerSpeed>, Option<u64>) {
    let Some(t) = value.get("timings") else {
        return (None, None);
    };
    let rate = |k: &str| {
        t.get(k)
            .and_then(Value::as_f64)
            .filter(|r| r.is_finite() && *r > 0.0)
    };
    let speed = ServerSpeed {
        prompt_per_second: rate("prompt_per_second"),
        generated_per_second: rate("predicted_per_second"),
        source: SpeedSource::Server,
    };
    let speed = (speed.prompt_per_second.is_some() || speed.generated_per_second.is_some())
        .then_some(speed);
    (speed, t.get("cache_n").and_then(Value::as_u64))
}

/// A count in an object, by key.
pub fn count(obj: Option<&Value>, key: &str) -> Option<u64> {
    obj.and_then(|o| o.get(key)).and_then(Value::as_u64)
}

/// `s` on one line, at most `max` characters (plus an ellipsis when cut).
pub fn cut(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_one_line_and_respects_char_boundaries() {
        assert_eq!(cut("a\n  b\tc", 10), "a b c");
        assert_eq!(cut("ééééé", 3), "ééé...");
        assert_eq!(cut("abc", 3), "abc");
    }
}
