//! What the run's LLM calls cost, as state.json saves it: a price (dollars per million tokens
//! of each class), the price a run's calls were costed at and where it came from, and each
//! answered call's token classes and dollars, so a cost can be recomputed when prices change.

use serde::{Deserialize, Serialize};

/// Dollars per million tokens. `cached_input` (cache reads) and `cache_write` may be unknown:
/// reads then cost the input price, writes 1.25 times it (Anthropic's five-minute cache).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

/// Where the price of the run's model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// `--price` (or `[tool.improve] price`).
    User,
    /// The price table built into improve.
    Table,
    /// A model the table does not know, on this machine (a loopback URL or a recording): free.
    Local,
    /// A model the table does not know, served elsewhere: its calls have no price.
    Unknown,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::User => "user",
            PriceSource::Table => "table",
            PriceSource::Local => "local",
            PriceSource::Unknown => "unknown",
        }
    }
}

/// The price the calls of the latest invocation were costed at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceInForce {
    pub model: String,
    pub source: PriceSource,
    /// The table's entry the model matched (`claude-sonnet-4-5` for `claude-sonnet-4-5-20250929`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// None when unknown.
    pub price: Option<Price>,
    /// The built-in table's hash (FNV-1a 64 of its bytes, in hex) and its date.
    pub table_hash: String,
    pub table_date: String,
}

/// One answered call: its token classes and what it cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CallCost {
    /// 0: the first request, k: repair round k.
    pub round: u32,
    /// Every prompt token, the cached and cache-written ones included.
    pub tokens_in: u64,
    /// Prompt tokens read from the server's cache.
    #[serde(default)]
    pub tokens_cached: u64,
    /// Prompt tokens written to the cache (Anthropic's `cache_creation_input_tokens`).
    #[serde(default)]
    pub tokens_cache_write: u64,
    pub tokens_out: u64,
    /// None when the price was unknown.
    pub cost_usd: Option<f64>,
}
