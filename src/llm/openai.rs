//! The OpenAI-compatible chat-completions wire format (OpenAI, vLLM, llama.cpp, Ollama's `/v1`,
//! LM Studio...): the endpoint, the key header, the request body and the parsing of an answer.
//! Sending, error classification and retrying live in `client.rs`.

use reqwest::header::{AUTHORIZATION, HeaderName};
use serde::Serialize;
use serde_json::Value;

use super::wire::{WireFormat, cut};
use super::{ChatRequest, ChatResponse, LlmError, Role};

/// `POST {url}/chat/completions`, `Authorization: Bearer <key>`.
pub struct OpenAi;

impl WireFormat for OpenAi {
    fn endpoint(&self, base: &str) -> String {
        format!("{}/chat/completions", base.trim_end_matches('/'))
    }

    fn key_header(&self, key: &str) -> (HeaderName, String) {
        (AUTHORIZATION, format!("Bearer {key}"))
    }

    fn body(&self, model: &str, req: &ChatRequest) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&body(model, req))
    }

    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError> {
        parse(answer)
    }
}

/// The request body. Typed rather than `json!` so that an `f32` temperature of 0.2 goes on the
/// wire as `0.2` and not as its widened `f64` form `0.20000000298023224`.
#[derive(Debug, Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    temperature: f32,
    max_tokens: u32,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

fn body<'a>(model: &'a str, req: &'a ChatRequest) -> Body<'a> {
    let system = Message {
        role: "system",
        content: &req.system,
    };
    let turns = req.messages.iter().map(|m| Message {
        role: role(m.role),
        content: &m.content,
    });
    Body {
        model,
        messages: std::iter::once(system).chain(turns).collect(),
        temperature: req.temperature,
        max_tokens: req.max_tokens,
    }
}

fn role(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Reads a 2xx answer. Fields are looked up by hand rather than through a strict struct so
/// that servers adding or omitting extras (llama.cpp's `timings`, a missing `usage`) still work.
fn parse(value: &Value) -> Result<ChatResponse, LlmError> {
    let Some(choice) = value.get("choices").and_then(|c| c.get(0)) else {
        // Some gateways answer 200 with an error object; say what it said.
        if let Some(error) = value.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string);
            return Err(LlmError::Malformed(format!(
                "the answer is an error, not a completion: {}",
                cut(&message, 200)
            )));
        }
        return Err(LlmError::Malformed("no choices[0] in the answer".into()));
    };
    let message = choice
        .get("message")
        .ok_or_else(|| LlmError::Malformed("no choices[0].message in the answer".into()))?;
    let text = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(LlmError::Malformed(
                "choices[0].message.content is not text".into(),
            ));
        }
    };
    let usage = value.get("usage");
    let count = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ChatResponse {
        text,
        tokens_in: count("prompt_tokens"),
        tokens_out: count("completion_tokens"),
        finish_reason: choice
            .get("finish_reason")
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
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn request() -> ChatRequest {
        ChatRequest {
            tag: "add:pkg/mod.py".into(),
            system: "you write pytest tests".into(),
            messages: vec![
                ChatMessage {
                    role: Role::User,
                    content: "test pkg/mod.py".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "```python\n```".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "again".into(),
                },
            ],
            max_tokens: 1234,
            temperature: 0.2,
        }
    }

    fn client(url: String, key: Option<&str>) -> LlmClient {
        let settings = LlmSettings {
            provider: Provider::OpenAi,
            url,
            model: "qwen-coder".into(),
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

    fn answer() -> Value {
        json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "def test_x(): pass"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}
        })
    }

    #[tokio::test]
    async fn happy_path_sends_the_body_and_bearer_key_and_reads_the_answer() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer()))
            .expect(1)
            .mount(&server)
            .await;
        // The trailing slash must not turn into `//chat/completions`.
        let c = client(format!("{}/v1/", server.uri()), Some("sk-test-key"));
        let r = c
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, "def test_x(): pass");
        assert_eq!((r.tokens_in, r.tokens_out, r.attempts), (42, 17, 1));
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));

        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        let sent = &requests[0];
        assert_eq!(
            sent.headers.get("authorization").unwrap(),
            "Bearer sk-test-key"
        );
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "qwen-coder",
                "messages": [
                    {"role": "system", "content": "you write pytest tests"},
                    {"role": "user", "content": "test pkg/mod.py"},
                    {"role": "assistant", "content": "```python\n```"},
                    {"role": "user", "content": "again"},
                ],
                "temperature": 0.2,
                "max_tokens": 1234,
            })
        );
        assert!(body.get("tag").is_none(), "the tag is not for the server");
    }

    #[tokio::test]
    async fn no_key_means_no_authorization_header() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer()))
            .expect(2)
            .mount(&server)
            .await;
        client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        // A blank key (an empty env var) is no key either: "Bearer " would only earn a 401.
        client(server.uri(), Some("  "))
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        for sent in server.received_requests().await.unwrap() {
            assert!(
                sent.headers.get("authorization").is_none(),
                "{:?}",
                sent.headers
            );
        }
    }

    #[test]
    fn parses_text_usage_and_finish_reason() {
        let v = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let r = parse(&v).unwrap();
        assert_eq!((r.text.as_str(), r.tokens_in, r.tokens_out), ("x", 3, 4));
        assert!(r.truncated());
    }

    #[test]
    fn null_content_and_missing_usage_are_empty_not_errors() {
        let r = parse(&json!({"choices": [{"message": {"content": null}}]})).unwrap();
        assert_eq!((r.text.as_str(), r.tokens_in, r.tokens_out), ("", 0, 0));
        assert_eq!(r.finish_reason, None);
    }

    #[test]
    fn answers_without_a_completion_are_malformed() {
        for v in [
            json!({}),
            json!({"choices": []}),
            json!({"choices": [{"finish_reason": "stop"}]}),
            json!({"choices": [{"message": {"content": 5}}]}),
        ] {
            assert!(matches!(parse(&v), Err(LlmError::Malformed(_))), "{v}");
        }
        let Err(LlmError::Malformed(why)) =
            parse(&json!({"error": {"message": "model not loaded"}}))
        else {
            panic!("an error object must be malformed");
        };
        assert!(why.contains("model not loaded"), "{why}");
    }
}
