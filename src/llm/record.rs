//! Recordings of LLM traffic: `--record` appends every exchange, `--replay` answers from them.
//! The file holds requests' text and answers, never headers, so no key can end up in it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ChatMessage, ChatRequest, ChatResponse, LlmError, Provider};
use crate::state::write_atomic;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub tag: String,
    pub provider: Provider,
    pub model: String,
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub response: ChatResponse,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recording {
    pub version: u32,
    pub exchanges: Vec<Exchange>,
}

impl Recording {
    pub fn load(path: &Path) -> Result<Recording, LlmError> {
        let err = |detail: String| LlmError::RecordingFile {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// Appends exchanges to a recording file, rewriting it atomically each time (a recording is
/// small, and a crash must not leave a torn one).
pub struct Recorder {
    path: PathBuf,
    recording: Mutex<Recording>,
}

impl Recorder {
    pub fn open(path: &Path) -> Result<Recorder, LlmError> {
        let recording = if path.exists() {
            Recording::load(path)?
        } else {
            Recording { version: 1, exchanges: Vec::new() }
        };
        Ok(Recorder { path: path.to_path_buf(), recording: Mutex::new(recording) })
    }

    pub fn append(&self, provider: Provider, model: &str, req: &ChatRequest, resp: &ChatResponse) -> Result<(), LlmError> {
        let mut rec = self.recording.lock().unwrap_or_else(|p| p.into_inner());
        rec.exchanges.push(Exchange {
            tag: req.tag.clone(),
            provider,
            model: model.to_string(),
            system: req.system.clone(),
            messages: req.messages.clone(),
            response: resp.clone(),
        });
        let bytes = serde_json::to_vec_pretty(&*rec).map_err(|e| LlmError::RecordingFile {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        write_atomic(&self.path, &bytes).map_err(|e| LlmError::RecordingFile {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })
    }
}

/// Answers from a recording: the first unused exchange with the request's tag, else the first
/// unused one at all (so a recording still serves when targets come in another order).
pub struct Replayer {
    path: PathBuf,
    exchanges: Vec<Exchange>,
    used: Mutex<Vec<bool>>,
}

impl Replayer {
    pub fn open(path: &Path) -> Result<Replayer, LlmError> {
        let rec = Recording::load(path)?;
        let used = Mutex::new(vec![false; rec.exchanges.len()]);
        Ok(Replayer { path: path.to_path_buf(), exchanges: rec.exchanges, used })
    }

    pub fn answer(&self, req: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free = |i: &usize| !used[*i];
        let pick = (0..self.exchanges.len())
            .filter(free)
            .find(|i| self.exchanges[*i].tag == req.tag)
            .or_else(|| (0..self.exchanges.len()).find(free));
        match pick {
            Some(i) => {
                used[i] = true;
                Ok(ChatResponse { attempts: 1, ..self.exchanges[i].response.clone() })
            }
            None => Err(LlmError::ReplayExhausted {
                path: self.path.display().to_string(),
                tag: req.tag.clone(),
            }),
        }
    }
}
