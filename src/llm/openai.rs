//! The OpenAI-compatible chat-completions wire format (OpenAI, vLLM, llama.cpp, Ollama's `/v1`,
//! LM Studio...): request body and answer parsing only; sending and retrying live in client.rs.

use serde_json::{Value, json};

use super::{ChatRequest, ChatResponse, LlmError, Role};

pub fn endpoint(base: &str) -> String {
    format!("{}/chat/completions", base.trim_end_matches('/'))
}

pub fn body(model: &str, req: &ChatRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    messages.extend(req.messages.iter().map(|m| {
        json!({
            "role": match m.role { Role::User => "user", Role::Assistant => "assistant" },
            "content": m.content,
        })
    }));
    json!({
        "model": model,
        "messages": messages,
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
    })
}

pub fn parse(value: &Value) -> Result<ChatResponse, LlmError> {
    let choice = value
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::Malformed("no choices[0] in the answer".into()))?;
    let message = choice
        .get("message")
        .ok_or_else(|| LlmError::Malformed("no choices[0].message in the answer".into()))?;
    let text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
    let usage = value.get("usage");
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Ok(ChatResponse {
        text,
        tokens_in: count("prompt_tokens"),
        tokens_out: count("completion_tokens"),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
        attempts: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;

    #[test]
    fn body_puts_the_system_prompt_first() {
        let req = ChatRequest {
            tag: "t".into(),
            system: "sys".into(),
            messages: vec![ChatMessage { role: Role::User, content: "hi".into() }],
            max_tokens: 100,
            temperature: 0.5,
        };
        let b = body("m", &req);
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "sys"}));
        assert_eq!(b["messages"][1], json!({"role": "user", "content": "hi"}));
        assert_eq!(b["model"], "m");
        assert_eq!(b["max_tokens"], 100);
    }

    #[test]
    fn parses_text_usage_and_finish_reason() {
        let v = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
        let r = parse(&v).unwrap();
        assert_eq!((r.text.as_str(), r.tokens_in, r.tokens_out), ("x", 3, 4));
        assert!(r.truncated());
        let null_content = json!({"choices": [{"message": {"content": null}}]});
        assert_eq!(parse(&null_content).unwrap().text, "");
        assert!(matches!(parse(&json!({"error": "x"})), Err(LlmError::Malformed(_))));
    }
}
