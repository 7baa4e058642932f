//! The OpenAI-compatible chat-completions wire format (OpenAI, vLLM, llama.cpp, Ollama's `/v1`,
//! LM Studio...): the endpoint, the key header, the request body and the parsing of an answer.
//! Sending, error classification and retrying live in `client.rs`.

use reqwest::header::{AUTHORIZATION, HeaderName};
use serde::Serialize;
use serde_json::Value;

use super::wire::{Event, Streamed, WireFormat, count, cut, event_json, llama_timings};
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

    fn body(&self, model: &str, req: &ChatRequest, stream: bool) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&body(model, req, stream))
    }

    fn parse(&self, answer: &Value) -> Result<ChatResponse, LlmError> {
        parse(answer)
    }

    fn event(
        &self,
        _name: Option<&str>,
        data: &str,
        acc: &mut Streamed,
    ) -> Result<Event, LlmError> {
        event(data, acc)
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
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    /// The token usage as a last chunk (OpenAI sends none in a stream without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

fn body<'a>(model: &'a str, req: &'a ChatRequest, stream: bool) -> Body<'a> {
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
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
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
    let (speed, cache_n) = llama_timings(value);
    Ok(ChatResponse {
        text,
        tokens_in: count(usage, "prompt_tokens").unwrap_or(0),
        tokens_out: count(usage, "completion_tokens").unwrap_or(0),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        attempts: 1,
        stopped: None,
        speed,
        cached_tokens: cached(usage).or(cache_n),
        cache_write_tokens: None,
    })
}

/// OpenAI's `usage.prompt_tokens_details.cached_tokens`.
fn cached(usage: Option<&Value>) -> Option<u64> {
    count(
        usage.and_then(|u| u.get("prompt_tokens_details")),
        "cached_tokens",
    )
}

/// One chunk of a streamed answer: `data: {"choices":[{"delta":{"content":...}}]}`, the usage
/// as a last chunk with no choices, then `data: [DONE]`.
fn event(data: &str, acc: &mut Streamed) -> Result<Event, LlmError> {
    if data.trim() == "[DONE]" {
        return Ok(Event::Done);
    }
    let value = event_json(data)?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_string);
        return Err(LlmError::Malformed(format!(
            "the stream reported an error: {}",
            cut(&message, 200)
        )));
    }
    if let Some(choice) = value.get("choices").and_then(|c| c.get(0)) {
        if let Some(text) = choice
            .get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            && !text.is_empty()
        {
            acc.text.push_str(text);
            acc.deltas += 1;
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            acc.finish_reason = Some(reason.to_string());
        }
    }
    if let Some(usage) = value.get("usage").filter(|u| !u.is_null()) {
        acc.tokens_in = count(Some(usage), "prompt_tokens").or(acc.tokens_in);
        acc.tokens_out = count(Some(usage), "completion_tokens").or(acc.tokens_out);
        acc.cached_tokens = cached(Some(usage)).or(acc.cached_tokens);
    }
    let (speed, cache_n) = llama_timings(&value);
    acc.speed = speed.or(acc.speed.take());
    acc.cached_tokens = acc.cached_tokens.or(cache_n);
    Ok(Event::More)
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
            cache_prefix: false,
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
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
        assert!(body.get("tag").is_none(), "the tag is not for the server");
    }

    fn sse(events: &[Value]) -> String {
        let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        body
    }

    fn sse_answer(body: String) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
    }

    #[tokio::test]
    async fn a_streamed_answer_is_read_with_its_usage_timings_and_cache() {
        let server = MockServer::start().await;
        let chunk = |t: &str| json!({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
        let body = sse(&[
            json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
            chunk("def test_x"),
            chunk("(): pass"),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "timings": {"prompt_n": 30, "cache_n": 12, "prompt_per_second": 41.5, "predicted_n": 5, "predicted_per_second": 6.5}}),
            json!({"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 12}}}),
        ]);
        Mock::given(method("POST"))
            .respond_with(sse_answer(body))
            .expect(2)
            .mount(&server)
            .await;
        let c = client(server.uri(), None);
        for _ in 0..2 {
            let r = c
                .complete(&request(), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(r.text, "def test_x(): pass");
            assert_eq!((r.tokens_in, r.tokens_out), (42, 5));
            assert_eq!(r.finish_reason.as_deref(), Some("stop"));
            assert_eq!(r.cached_tokens, Some(12));
            let speed = r.speed.unwrap();
            assert_eq!(speed.source, crate::llm::SpeedSource::Server);
            assert_eq!(
                (speed.prompt_per_second, speed.generated_per_second),
                (Some(41.5), Some(6.5))
            );
            assert_eq!(r.stopped, None);
        }
        // A server that streams is asked to stream every time.
        for sent in server.received_requests().await.unwrap() {
            let body: Value = serde_json::from_slice(&sent.body).unwrap();
            assert_eq!(body["stream"], true);
        }
    }

    #[tokio::test]
    async fn a_stream_without_usage_or_done_is_counted_by_the_client() {
        let server = MockServer::start().await;
        let body = format!(
            "data: {}\n\ndata: {}\n\n",
            json!({"choices": [{"delta": {"content": "abcdefgh"}}]}),
            json!({"choices": [{"delta": {"content": "ij"}, "finish_reason": "length"}]})
        );
        Mock::given(method("POST"))
            .respond_with(sse_answer(body))
            .mount(&server)
            .await;
        let r = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.text, "abcdefghij");
        assert!(r.truncated());
        // Three characters, or one chunk, a token: the larger.
        assert_eq!(r.tokens_out, 4);
        assert!(r.tokens_in > 0, "estimated from the prompt");
        assert_eq!(
            r.speed.map(|s| s.source),
            Some(crate::llm::SpeedSource::Measured)
        );
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_end_is_malformed_and_retried() {
        let server = MockServer::start().await;
        let body = format!(
            "data: {}\n\n",
            json!({"choices": [{"delta": {"content": "def test_x():"}}]})
        );
        Mock::given(method("POST"))
            .respond_with(sse_answer(body))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Malformed(_)), "{err:?}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_runaway_stream_is_stopped_and_what_came_before_kept() {
        let server = MockServer::start().await;
        let mut events =
            vec![json!({"choices": [{"delta": {"content": "```python\ndef test_u():\n"}}]})];
        for k in 0..40 {
            events.push(json!({"choices": [{"delta": {"content": format!("    assert f('%{k}') == 'A'\n")}}]}));
        }
        Mock::given(method("POST"))
            .respond_with(sse_answer(sse(&events)))
            .mount(&server)
            .await;
        let r = client(server.uri(), None)
            .complete(&request(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            r.text,
            "```python\ndef test_u():\n    assert f('%0') == 'A'\n    assert f('%1') == 'A'\n    assert f('%2') == 'A'\n```\n"
        );
        let stop = r.stopped.unwrap();
        assert_eq!(stop.reason, crate::llm::StopReason::Enumeration);
        // Ten chunks of text were read (the code block's start and nine statements).
        assert_eq!(stop.tokens_received, r.tokens_out);
        assert!(stop.tokens_received >= 10, "{stop:?}");
        assert_eq!(stop.tokens_saved, 1234 - stop.tokens_received);
        assert_eq!(r.finish_reason, None);
        assert!(!r.truncated());
    }

    #[tokio::test]
    async fn a_server_that_cannot_stream_is_asked_whole_from_then_on() {
        // One that answers whole: read as before, and not asked to stream again.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer()))
            .expect(2)
            .mount(&server)
            .await;
        let c = client(server.uri(), None);
        for _ in 0..2 {
            let r = c
                .complete(&request(), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!((r.text.as_str(), r.tokens_in), ("def test_x(): pass", 42));
        }
        let streamed: Vec<bool> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["stream"] == true)
            .collect();
        assert_eq!(streamed, [true, false]);

        // One that refuses `stream` with a 400: asked again whole, in the same attempt.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(wiremock::matchers::body_string_contains("\"stream\":true"))
            .respond_with(ResponseTemplate::new(400).set_body_string("unknown parameter: stream"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer()))
            .expect(2)
            .mount(&server)
            .await;
        let c = client(server.uri(), None);
        for _ in 0..2 {
            let r = c
                .complete(&request(), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!((r.text.as_str(), r.attempts), ("def test_x(): pass", 1));
        }
        server.verify().await;
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
        assert_eq!((r.speed, r.cached_tokens), (None, None));
        let v = json!({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens_details": {"cached_tokens": 9}},
                       "timings": {"cache_n": 3, "prompt_per_second": 50.0}});
        let r = parse(&v).unwrap();
        assert_eq!(
            r.cached_tokens,
            Some(9),
            "the usage wins over llama.cpp's timings"
        );
        assert_eq!(r.speed.and_then(|s| s.prompt_per_second), Some(50.0));
        assert_eq!(r.speed.and_then(|s| s.generated_per_second), None);
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
