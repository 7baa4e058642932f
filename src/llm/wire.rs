//! What a wire format is: the one trait an HTTP provider implements (`openai.rs`,
//! `anthropic.rs`). A wire format is data and pure functions: where to POST, which headers, the
//! body, and how to read a 2xx answer. Sending, error classification, Retry-After and retrying
//! are the client's (`client.rs`), the same for every format.
//!
//! Adding a wire format: a file with a unit struct implementing [`WireFormat`], its `mod` line
//! and one arm in [`super::wire_format`], and a [`super::Provider`] variant to name it.

use reqwest::header::HeaderName;
use serde_json::Value;

use super::{ChatRequest, ChatResponse, LlmError};

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
    fn body(&self, model: &str, req: &ChatRequest) -> serde_json::Result<Vec<u8>>;

    /// Reads a 2xx answer: text, token usage, stop reason; [`LlmError::Malformed`] when it has
    /// no completion. Non-2xx answers never get here: the client makes them [`LlmError::Http`].
    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError>;
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
