//! Anthropic's messages wire format: the endpoint, the headers, the request body and the parsing
//! of an answer. Sending, error classification and retrying live in `client.rs`.

use reqwest::header::HeaderName;
use serde::Serialize;
use serde_json::Value;

use super::wire::WireFormat;
use super::{ChatRequest, ChatResponse, LlmError, Role};

/// The `anthropic-version` header: the API shape this file was written against.
const VERSION: &str = "2023-06-01";

/// `POST {url}/v1/messages`, `x-api-key: <key>`, `anthropic-version: 2023-06-01`.
pub struct Anthropic;

impl WireFormat for Anthropic {
    fn endpoint(&self, base: &str) -> String {
        format!("{}/v1/messages", base.trim_end_matches('/'))
    }

    fn fixed_headers(&self) -> &'static [(&'static str, &'static str)] {
        &[("anthropic-version", VERSION)]
    }

    fn key_header(&self, key: &str) -> (HeaderName, String) {
        (HeaderName::from_static("x-api-key"), key.to_string())
    }

    fn body(&self, model: &str, req: &ChatRequest) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&body(model, req))
    }

    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError> {
        parse(answer)
    }
}

/// Typed for the same reason as the OpenAI body: an `f32` temperature must not be widened.
#[derive(Debug, Serialize)]
struct Body<'a> {
    model: &'a str,
    system: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    temperature: f32,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

fn body<'a>(model: &'a str, req: &'a ChatRequest) -> Body<'a> {
    Body {
        model,
        system: &req.system,
        messages: req
            .messages
            .iter()
            .map(|m| Message {
                role: match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: &m.content,
            })
            .collect(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
    }
}

/// Reads a 2xx answer: the text is every `text` block joined; other blocks (thinking,
/// tool use) are not for us.
fn parse(value: &Value) -> Result<ChatResponse, LlmError> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Malformed("no content blocks in the answer".into()))?;
    let mut text = String::new();
    for block in blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
    {
        let part = block
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Malformed("a text block has no text".into()))?;
        text.push_str(part);
    }
    let usage = value.get("usage");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ChatResponse {
        text,
        tokens_in: count("input_tokens"),
        tokens_out: count("output_tokens"),
        finish_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        attempts: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ApiKey, ChatMessage, LlmClient, LlmSettings, Provider, RetryPolicy};
    use serde_json::json;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(url: String, key: Option<&str>) -> LlmClient {
        let settings = LlmSettings {
            provider: Provider::Anthropic,
            url,
            model: "claude-x".into(),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_attempts: 1,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            replay: None,
            record: None,
        };
        LlmClient::new(settings, key.map(|k| ApiKey::new(k.into()))).unwrap()
    }

    fn request() -> ChatRequest {
        ChatRequest {
            tag: "fix:tests/test_a.py".into(),
            system: "be terse".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "write tests".into(),
            }],
            max_tokens: 2048,
            temperature: 0.2,
        }
    }

    #[tokio::test]
    async fn happy_path_headers_body_and_joined_text() {
        let server = MockServer::start().await;
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "text", "text": "first "},
                {"type": "thinking", "thinking": "not for the user"},
                {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                {"type": "text", "text": "second"},
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 120, "output_tokens": 45}
        });
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .and(header("x-api-key", "ant-key-1"))
            .and(header("anthropic-version", "2023-06-01"))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .expect(1)
            .mount(&server)
            .await;
        let c = client(format!("{}/", server.uri()), Some("ant-key-1"));
        let r = c
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, "first second");
        assert_eq!((r.tokens_in, r.tokens_out), (120, 45));
        assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));

        let sent = &server.received_requests().await.unwrap()[0];
        assert!(
            sent.headers.get("authorization").is_none(),
            "Anthropic takes x-api-key only"
        );
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-x",
                "system": "be terse",
                "messages": [{"role": "user", "content": "write tests"}],
                "max_tokens": 2048,
                "temperature": 0.2,
            })
        );
    }

    #[tokio::test]
    async fn no_key_means_no_x_api_key_header() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/messages"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"content": []})))
            .expect(1)
            .mount(&server)
            .await;
        let r = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, "");
        let sent = &server.received_requests().await.unwrap()[0];
        assert!(sent.headers.get("x-api-key").is_none());
        assert_eq!(sent.headers.get("anthropic-version").unwrap(), "2023-06-01");
    }

    #[test]
    fn max_tokens_stop_reason_is_truncation() {
        let v = json!({"content": [{"type": "text", "text": "a"}], "stop_reason": "max_tokens"});
        let r = parse(&v).unwrap();
        assert!(r.truncated());
        assert_eq!(
            (r.tokens_in, r.tokens_out),
            (0, 0),
            "missing usage counts as zero"
        );
    }

    #[test]
    fn answers_without_content_are_malformed() {
        for v in [
            json!({"type": "error", "error": {"type": "overloaded_error"}}),
            json!({"content": "text"}),
            json!({"content": [{"type": "text"}]}),
        ] {
            assert!(matches!(parse(&v), Err(LlmError::Malformed(_))), "{v}");
        }
    }
}
