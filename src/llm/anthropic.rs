//! Anthropic's messages wire format: request body and answer parsing only.

use serde_json::{Value, json};

use super::{ChatRequest, ChatResponse, LlmError, Role};

pub const VERSION: &str = "2023-06-01";

pub fn endpoint(base: &str) -> String {
    format!("{}/v1/messages", base.trim_end_matches('/'))
}

pub fn body(model: &str, req: &ChatRequest) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            json!({
                "role": match m.role { Role::User => "user", Role::Assistant => "assistant" },
                "content": m.content,
            })
        })
        .collect();
    json!({
        "model": model,
        "system": req.system,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
    })
}

pub fn parse(value: &Value) -> Result<ChatResponse, LlmError> {
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Malformed("no content blocks in the answer".into()))?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("");
    let usage = value.get("usage");
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Ok(ChatResponse {
        text,
        tokens_in: count("input_tokens"),
        tokens_out: count("output_tokens"),
        finish_reason: value.get("stop_reason").and_then(Value::as_str).map(str::to_string),
        attempts: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_text_blocks_and_skips_others() {
        let v = json!({"content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "x"}, {"type": "text", "text": "b"}],
                       "stop_reason": "max_tokens", "usage": {"input_tokens": 5, "output_tokens": 6}});
        let r = parse(&v).unwrap();
        assert_eq!(r.text, "ab");
        assert_eq!((r.tokens_in, r.tokens_out), (5, 6));
        assert!(r.truncated());
        assert!(matches!(parse(&json!({"type": "error"})), Err(LlmError::Malformed(_))));
    }
}
