//! Anthropic's messages wire format: the endpoint, the headers, the request body and the parsing
//! of an answer. Sending, error classification and retrying live in `client.rs`.

use reqwest::header::HeaderName;
use serde::Serialize;
use serde_json::Value;

use super::wire::{Event, Streamed, WireFormat, count, cut, event_json, llama_timings};
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

    fn body(&self, model: &str, req: &ChatRequest, stream: bool) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&body(model, req, stream))
    }

    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError> {
        parse(answer)
    }

    fn event(&self, name: Option<&str>, data: &str, acc: &mut Streamed) -> Result<Event, LlmError> {
        event(name, data, acc)
    }
}

/// Typed for the same reason as the OpenAI body: an `f32` temperature must not be widened.
#[derive(Debug, Serialize)]
struct Body<'a> {
    model: &'a str,
    system: Vec<Block<'a>>,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
}

/// A turn's text: a plain string, or blocks when it carries a cache mark.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<Block<'a>>),
}

#[derive(Debug, Serialize)]
struct Block<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

/// `{"type": "ephemeral"}`: the prompt up to and including this block is cached (five minutes,
/// renewed by each read), so later requests with the same prefix read it at a tenth of the
/// input price. Prefixes shorter than the model's minimum (1024 or 2048 tokens) are simply
/// not cached.
#[derive(Debug, Serialize)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

fn cached_block(text: &str) -> Block<'_> {
    Block {
        kind: "text",
        text,
        cache_control: Some(CacheControl { kind: "ephemeral" }),
    }
}

/// The stable prefix carries cache marks: the system prompt (the same for every request of
/// the run) always, and the first user turn (the module excerpt and the examples, which every
/// repair round of the conversation sends again) when the request says repairs may follow:
/// writing it costs a quarter more than reading it plainly, reading it a tenth. Later turns
/// are plain strings.
fn body<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> Body<'a> {
    Body {
        model,
        system: vec![cached_block(&req.system)],
        messages: req
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message {
                role: match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                content: match (i, m.role) {
                    (0, Role::User) if req.cache_prefix => {
                        Content::Blocks(vec![cached_block(&m.content)])
                    }
                    _ => Content::Text(&m.content),
                },
            })
            .collect(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        stream: stream.then_some(true),
    }
}

/// Anthropic's `input_tokens` leaves out the tokens read from and written to the cache; ours
/// count every prompt token, as OpenAI's `prompt_tokens` does: (all, read, written).
fn prompt_tokens(usage: Option<&Value>) -> (Option<u64>, Option<u64>, Option<u64>) {
    let read = count(usage, "cache_read_input_tokens");
    let written = count(usage, "cache_creation_input_tokens");
    let all =
        count(usage, "input_tokens").map(|plain| plain + read.unwrap_or(0) + written.unwrap_or(0));
    (all, read, written)
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
    let (tokens_in, read, written) = prompt_tokens(value.get("usage"));
    let usage = value.get("usage");
    let (speed, cache_n) = llama_timings(value);
    Ok(ChatResponse {
        text,
        tokens_in: tokens_in.unwrap_or(0),
        tokens_out: count(usage, "output_tokens").unwrap_or(0),
        finish_reason: value
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        attempts: 1,
        stopped: None,
        speed,
        cached_tokens: read.or(cache_n),
        cache_write_tokens: written,
    })
}

/// One event of a streamed answer: `message_start` (the input tokens), `content_block_delta`
/// (a `text_delta`), `message_delta` (the stop reason, the output tokens), `message_stop`;
/// `ping` and the block starts and stops say nothing we need. An `error` event is the error
/// the same failure would have been as an HTTP status.
fn event(name: Option<&str>, data: &str, acc: &mut Streamed) -> Result<Event, LlmError> {
    let value = event_json(data)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .or(name)
        .unwrap_or("");
    match kind {
        "message_start" => {
            let usage = value.get("message").and_then(|m| m.get("usage"));
            let (all, read, written) = prompt_tokens(usage);
            acc.tokens_in = all.or(acc.tokens_in);
            acc.cached_tokens = read.or(acc.cached_tokens);
            acc.cache_write_tokens = written.or(acc.cache_write_tokens);
        }
        "content_block_delta" => {
            let delta = value.get("delta");
            if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta")
                && let Some(text) = delta.and_then(|d| d.get("text")).and_then(Value::as_str)
            {
                acc.text.push_str(text);
                acc.deltas += 1;
            }
        }
        "message_delta" => {
            if let Some(reason) = value
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .and_then(Value::as_str)
            {
                acc.finish_reason = Some(reason.to_string());
            }
            acc.tokens_out = count(value.get("usage"), "output_tokens").or(acc.tokens_out);
        }
        "message_stop" => {
            let (speed, cache_n) = llama_timings(&value);
            acc.speed = speed.or(acc.speed.take());
            acc.cached_tokens = acc.cached_tokens.or(cache_n);
            return Ok(Event::Done);
        }
        "error" => {
            let error = value.get("error");
            let what = error
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let message = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or(what);
            let body = cut(&format!("{what}: {message}"), 200);
            let status = match what {
                "overloaded_error" => 529,
                "rate_limit_error" => 429,
                "api_error" => 500,
                "timeout_error" => 504,
                _ => {
                    return Err(LlmError::Malformed(format!(
                        "the stream reported an error: {body}"
                    )));
                }
            };
            return Err(LlmError::Http {
                status,
                retry_after: None,
                body,
            });
        }
        _ => {}
    }
    Ok(Event::More)
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
            cache_prefix: false,
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
                "system": [{"type": "text", "text": "be terse", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": "write tests"}],
                "max_tokens": 2048,
                "temperature": 0.2,
                "stream": true,
            })
        );
    }

    fn sse(events: &[(&str, Value)]) -> ResponseTemplate {
        let body: String = events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect();
        ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
    }

    fn text_delta(t: &str) -> (&'static str, Value) {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
        )
    }

    #[tokio::test]
    async fn a_streamed_answer_is_read_event_by_event() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse(&[
                ("message_start", json!({"type": "message_start", "message": {"usage": {"input_tokens": 120, "output_tokens": 1, "cache_read_input_tokens": 100}}})),
                ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
                ("ping", json!({"type": "ping"})),
                text_delta("first "),
                ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "no"}})),
                text_delta("second"),
                ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                ("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 45}})),
                ("message_stop", json!({"type": "message_stop"})),
            ]))
            .mount(&server)
            .await;
        let r = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, "first second");
        // Anthropic's input_tokens leaves the cache reads out: ours counts every prompt token.
        assert_eq!((r.tokens_in, r.tokens_out), (220, 45));
        assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(r.cached_tokens, Some(100));
        assert_eq!(
            r.speed.map(|s| s.source),
            Some(crate::llm::SpeedSource::Measured)
        );
    }

    #[tokio::test]
    async fn an_overloaded_error_event_is_retried_like_a_529() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sse(&[
                ("message_start", json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}})),
                ("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            ]))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LlmError::Http { status: 529, body, .. } if body.contains("Overloaded")),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_repeated_test_is_stopped_in_the_event_format_too() {
        let server = MockServer::start().await;
        let test = |name: &str| format!("def test_{name}():\n    assert f(1) == 2\n\n");
        let mut events = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 7}}}),
            ),
            text_delta("```python\n"),
        ];
        let pieces: Vec<String> = ["a", "b", "c", "d"].iter().map(|n| test(n)).collect();
        for p in &pieces {
            events.push(text_delta(p));
        }
        events.push(("message_stop", json!({"type": "message_stop"})));
        Mock::given(method("POST"))
            .respond_with(sse(&events))
            .mount(&server)
            .await;
        let r = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, format!("```python\n{}```\n", test("a")));
        let stop = r.stopped.unwrap();
        assert_eq!(stop.reason, crate::llm::StopReason::RepeatedTest);
        assert_eq!(r.tokens_in, 7);
        assert_eq!(stop.tokens_saved, 2048 - stop.tokens_received);
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

    /// A repair conversation: the system prompt and the first user turn (the module and the
    /// examples) carry the cache marks; the answer and the failures after them do not, so the
    /// marked prefix is the same bytes in every round.
    #[test]
    fn only_the_stable_prefix_carries_cache_marks() {
        let first = ChatRequest {
            cache_prefix: true,
            ..request()
        };
        let mut req = first.clone();
        req.messages.push(ChatMessage {
            role: Role::Assistant,
            content: "the answer".into(),
        });
        req.messages.push(ChatMessage {
            role: Role::User,
            content: "these failed".into(),
        });
        let first = serde_json::to_value(body("m", &first, false)).unwrap();
        let repair = serde_json::to_value(body("m", &req, false)).unwrap();
        // Without repairs to come, only the system prompt is marked: no write for nothing.
        let alone = serde_json::to_value(body("m", &request(), false)).unwrap();
        assert_eq!(alone["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(alone["messages"][0]["content"], "write tests");
        assert_eq!(repair["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(repair["messages"][0], first["messages"][0]);
        assert_eq!(
            repair["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        assert_eq!(repair["messages"][1]["content"], "the answer");
        assert_eq!(repair["messages"][2]["content"], "these failed");
    }

    #[test]
    fn cache_reads_and_writes_count_as_prompt_tokens() {
        let answer = json!({
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 50, "cache_read_input_tokens": 3000,
                      "cache_creation_input_tokens": 400, "output_tokens": 45}
        });
        let r = parse(&answer).unwrap();
        assert_eq!(r.tokens_in, 3450);
        assert_eq!(
            (r.cached_tokens, r.cache_write_tokens),
            (Some(3000), Some(400))
        );
    }
}
