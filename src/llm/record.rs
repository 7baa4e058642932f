//! Recordings of LLM traffic: `--record` appends every exchange to a JSON file, `--replay`
//! answers from one. A recording holds the requests' text and the answers, never headers or
//! settings beyond provider and model, so no key can end up in it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ChatMessage, ChatRequest, ChatResponse, EarlyStop, LlmError, Provider, ServerSpeed};

/// The only file format this build reads and writes.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub version: u32,
    pub exchanges: Vec<Exchange>,
}

/// One request and the answer it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub tag: String,
    pub provider: Provider,
    pub model: String,
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub response: RecordedResponse,
}

/// An answer as stored: what the server said, without `attempts`, which described the network
/// on the day of recording and means nothing on replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub text: String,
    #[serde(default)]
    pub tokens_in: u64,
    #[serde(default)]
    pub tokens_out: u64,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The answer was stopped while streaming: `text` is what was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<EarlyStop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<ServerSpeed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the cache: with `cached_tokens`, what a cost is recomputed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
}

impl From<&ChatResponse> for RecordedResponse {
    fn from(r: &ChatResponse) -> Self {
        RecordedResponse {
            text: r.text.clone(),
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            finish_reason: r.finish_reason.clone(),
            stopped: r.stopped,
            speed: r.speed,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
        }
    }
}

impl From<&RecordedResponse> for ChatResponse {
    fn from(r: &RecordedResponse) -> Self {
        ChatResponse {
            text: r.text.clone(),
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            finish_reason: r.finish_reason.clone(),
            attempts: 1,
            stopped: r.stopped,
            speed: r.speed,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
        }
    }
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            version: VERSION,
            exchanges: Vec::new(),
        }
    }
}

fn file_error(path: &Path, detail: impl std::fmt::Display) -> LlmError {
    LlmError::RecordingFile {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

impl Recording {
    /// Reads a recording, refusing files that are not one (or are from another format version)
    /// with an error that names the file.
    pub fn load(path: &Path) -> Result<Recording, LlmError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let recording: Recording = serde_json::from_str(&text)
            .map_err(|e| file_error(path, format!("not a recording: {e}")))?;
        if recording.version != VERSION {
            return Err(file_error(
                path,
                format!(
                    "recording format version {} is not supported (this build reads {VERSION})",
                    recording.version
                ),
            ));
        }
        Ok(recording)
    }

    /// Writes the whole recording atomically: a crash mid-write leaves the previous file, never
    /// a torn one that would fail every later replay.
    pub fn save(&self, path: &Path) -> Result<(), LlmError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| file_error(path, e))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&with_folder(path), &bytes).map_err(|e| file_error(path, e))
    }

    /// Adds one exchange and saves; on a failed save the exchange is taken back out, so the
    /// value in memory never claims more than the file holds.
    pub fn append_and_save(&mut self, exchange: Exchange, path: &Path) -> Result<(), LlmError> {
        self.exchanges.push(exchange);
        let saved = self.save(path);
        if saved.is_err() {
            self.exchanges.pop();
        }
        saved
    }
}

/// `write_atomic` syncs the folder found through the parent path; a bare `rec.json` has an
/// empty parent, which names no folder at all.
fn with_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new(".").join(path),
        _ => path.to_path_buf(),
    }
}

/// Appends exchanges to a recording file shared by every task of a run.
pub struct Recorder {
    path: PathBuf,
    // The lock is held across the save so that concurrent appends reach the disk in order and
    // none is lost between one task's read and another's write. Saves are small and rare (one
    // per LLM answer), so blocking the executor thread that briefly is cheaper than the
    // machinery to avoid it.
    recording: Mutex<Recording>,
}

impl Recorder {
    /// Continues an existing recording (a resumed run keeps recording into the same file) or
    /// starts a new one. An existing file that is not a recording is an error, not overwritten.
    pub fn open(path: &Path) -> Result<Recorder, LlmError> {
        let recording = match std::fs::metadata(path) {
            Ok(_) => Recording::load(path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Recording::default(),
            Err(e) => return Err(file_error(path, e)),
        };
        Ok(Recorder {
            path: path.to_path_buf(),
            recording: Mutex::new(recording),
        })
    }

    pub fn append(
        &self,
        provider: Provider,
        model: &str,
        req: &ChatRequest,
        resp: &ChatResponse,
    ) -> Result<(), LlmError> {
        let exchange = Exchange {
            tag: req.tag.clone(),
            provider,
            model: model.to_string(),
            system: req.system.clone(),
            messages: req.messages.clone(),
            response: resp.into(),
        };
        // A panic elsewhere while holding the lock leaves a consistent value (push and pop are
        // the only mutations), so a poisoned lock is safe to keep using.
        let mut recording = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        recording.append_and_save(exchange, &self.path)
    }
}

/// Answers from a recording: the first unused exchange with the request's tag, else the first
/// unused one at all, so a recording still serves when targets come in another order or the
/// tag format changed.
pub struct Replayer {
    path: PathBuf,
    exchanges: Vec<Exchange>,
    used: Mutex<Vec<bool>>,
}

impl Replayer {
    pub fn open(path: &Path) -> Result<Replayer, LlmError> {
        let recording = Recording::load(path)?;
        Ok(Replayer {
            path: path.to_path_buf(),
            used: Mutex::new(vec![false; recording.exchanges.len()]),
            exchanges: recording.exchanges,
        })
    }

    pub fn answer(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        // Only whole-element writes happen under this lock, so a poisoned one is still valid.
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free: Vec<usize> = (0..self.exchanges.len()).filter(|&i| !used[i]).collect();
        let pick = free
            .iter()
            .copied()
            .find(|&i| self.exchanges[i].tag == req.tag)
            .or_else(|| free.first().copied());
        let Some(i) = pick else {
            return Err(LlmError::ReplayExhausted {
                path: self.path.display().to_string(),
                tag: req.tag.clone(),
            });
        };
        used[i] = true;
        let exchange = &self.exchanges[i];
        if exchange.tag != req.tag {
            tracing::debug!(wanted = %req.tag, served = %exchange.tag, "replaying an answer recorded under another tag");
        }
        Ok((&exchange.response).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;
    use std::sync::Arc;

    fn request(tag: &str) -> ChatRequest {
        ChatRequest {
            tag: tag.into(),
            system: "sys".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: format!("please {tag}"),
            }],
            max_tokens: 10,
            temperature: 0.0,
            cache_prefix: false,
        }
    }

    fn exchange(tag: &str, text: &str) -> Exchange {
        Exchange {
            tag: tag.into(),
            provider: Provider::OpenAi,
            model: "m".into(),
            system: "sys".into(),
            messages: request(tag).messages,
            response: RecordedResponse {
                text: text.into(),
                tokens_in: 10,
                tokens_out: 20,
                finish_reason: Some("stop".into()),
                stopped: None,
                speed: None,
                cached_tokens: None,
                cache_write_tokens: None,
            },
        }
    }

    fn write(dir: &Path, exchanges: Vec<Exchange>) -> PathBuf {
        let path = dir.join("rec.json");
        Recording {
            version: VERSION,
            exchanges,
        }
        .save(&path)
        .unwrap();
        path
    }

    #[test]
    fn the_file_has_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), vec![exchange("add:pkg/mod.py", "hello")]);
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"version": 1, "exchanges": [{
                "tag": "add:pkg/mod.py", "provider": "openai", "model": "m", "system": "sys",
                "messages": [{"role": "user", "content": "please add:pkg/mod.py"}],
                "response": {"text": "hello", "tokens_in": 10, "tokens_out": 20, "finish_reason": "stop"}
            }]})
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("rec.json")],
            "no temp file left behind"
        );
    }

    #[test]
    fn replay_prefers_the_tag_then_falls_back_then_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            vec![
                exchange("add:a.py", "A1"),
                exchange("add:b.py", "B"),
                exchange("add:a.py", "A2"),
            ],
        );
        let replay = Replayer::open(&path).unwrap();
        assert_eq!(replay.answer(&request("add:b.py")).unwrap().text, "B");
        assert_eq!(replay.answer(&request("add:a.py")).unwrap().text, "A1");
        let fallback = replay.answer(&request("fix:other.py")).unwrap();
        assert_eq!((fallback.text.as_str(), fallback.attempts), ("A2", 1));
        let err = replay.answer(&request("add:a.py")).unwrap_err();
        assert!(
            matches!(&err, LlmError::ReplayExhausted { tag, .. } if tag == "add:a.py"),
            "{err}"
        );
        assert!(err.to_string().contains("rec.json"), "{err}");
    }

    #[test]
    fn replay_hands_each_answer_out_once_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            (0..40).map(|i| exchange("t", &i.to_string())).collect(),
        );
        let replay = Arc::new(Replayer::open(&path).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = Arc::clone(&replay);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| r.answer(&request("t")).unwrap().text)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .map(|t| t.parse().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
        assert!(matches!(
            replay.answer(&request("t")),
            Err(LlmError::ReplayExhausted { .. })
        ));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        assert!(
            matches!(Replayer::open(&missing), Err(LlmError::RecordingFile { path, .. }) if path.contains("nope.json"))
        );

        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"version\": 1, \"exchanges\": [").unwrap();
        let err = Replayer::open(&garbage).err().unwrap();
        assert!(
            matches!(err, LlmError::RecordingFile { .. })
                && err.to_string().contains("not a recording"),
            "{err}"
        );
        // Recording into a file that is not a recording must not destroy it.
        assert!(matches!(
            Recorder::open(&garbage),
            Err(LlmError::RecordingFile { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&garbage).unwrap(),
            "{\"version\": 1, \"exchanges\": ["
        );

        let future = dir.path().join("v2.json");
        std::fs::write(&future, r#"{"version": 2, "exchanges": []}"#).unwrap();
        let err = Replayer::open(&future).err().unwrap();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn recorder_appends_to_an_existing_recording() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), vec![exchange("old", "before")]);
        let recorder = Recorder::open(&path).unwrap();
        let resp = ChatResponse {
            text: "after".into(),
            tokens_in: 1,
            tokens_out: 2,
            finish_reason: None,
            attempts: 3,
            stopped: Some(EarlyStop {
                reason: crate::llm::StopReason::Enumeration,
                tokens_received: 2,
                tokens_saved: 62,
            }),
            speed: Some(ServerSpeed {
                prompt_per_second: Some(40.5),
                generated_per_second: None,
                source: crate::llm::SpeedSource::Server,
            }),
            cached_tokens: Some(7),
            cache_write_tokens: Some(3),
        };
        recorder
            .append(Provider::Anthropic, "claude", &request("new"), &resp)
            .unwrap();
        let rec = Recording::load(&path).unwrap();
        let texts: Vec<_> = rec
            .exchanges
            .iter()
            .map(|e| e.response.text.as_str())
            .collect();
        assert_eq!(texts, ["before", "after"]);
        assert_eq!(rec.exchanges[1].provider, Provider::Anthropic);
        assert!(!std::fs::read_to_string(&path).unwrap().contains("attempts"));
        // What a stream's stop saved, the server's speed and its cache come back on replay.
        let replayed = ChatResponse::from(&rec.exchanges[1].response);
        assert_eq!(
            replayed,
            ChatResponse {
                attempts: 1,
                ..resp
            }
        );
    }

    #[test]
    fn a_failed_save_is_an_error_and_not_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("sub");
        let path = folder.join("rec.json");
        // A path that cannot exist fails at once, before any tokens are spent.
        std::fs::write(&folder, "").unwrap();
        assert!(matches!(
            Recorder::open(&path),
            Err(LlmError::RecordingFile { .. })
        ));
        // One that breaks later (the folder replaced by a file) fails the append.
        std::fs::remove_file(&folder).unwrap();
        let recorder = Recorder::open(&path).unwrap();
        std::fs::write(&folder, "").unwrap();
        let resp = ChatResponse {
            text: "x".into(),
            tokens_in: 0,
            tokens_out: 0,
            finish_reason: None,
            attempts: 1,
            stopped: None,
            speed: None,
            cached_tokens: None,
            cache_write_tokens: None,
        };
        let err = recorder
            .append(Provider::OpenAi, "m", &request("t"), &resp)
            .unwrap_err();
        assert!(matches!(err, LlmError::RecordingFile { .. }), "{err}");
        assert!(recorder.recording.lock().unwrap().exchanges.is_empty());
    }

    #[test]
    fn a_bare_file_name_gets_a_folder() {
        // `--record rec.json` has an empty parent, which names no folder to sync.
        assert_eq!(with_folder(Path::new("rec.json")), Path::new("./rec.json"));
        assert_eq!(
            with_folder(Path::new("out/rec.json")),
            Path::new("out/rec.json")
        );
        assert_eq!(
            with_folder(Path::new("/tmp/rec.json")),
            Path::new("/tmp/rec.json")
        );
    }
}
