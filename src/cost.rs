//! What a night costs: the price table built into the binary (`prices/prices.toml`), the price
//! of the run's model and where it came from, the dollars of one call by its token classes,
//! and the ledger that keeps `--max-cost` with `--jobs N`: each call reserves its worst case
//! before it is made and settles to its real cost when it answers, so calls in flight together
//! can never pass the cap.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

use crate::error::UsageError;
use crate::llm::{ChatRequest, ChatResponse};
use crate::schema::{CallCost, Price, PriceInForce, PriceSource, RunState};

/// The price table, as transcribed (its header names the source and the date).
const TABLE: &str = include_str!("../prices/prices.toml");

/// What cache writes cost when the price does not say: Anthropic's five-minute cache charges
/// 1.25 times the input price (OpenAI reports no writes).
const CACHE_WRITE_FACTOR: f64 = 1.25;

#[derive(Debug, Deserialize)]
struct TableFile {
    date: String,
    models: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
}

fn table() -> &'static TableFile {
    static PARSED: OnceLock<TableFile> = OnceLock::new();
    PARSED.get_or_init(|| {
        toml::from_str(TABLE).unwrap_or_else(|e| {
            // A unit test parses the file: a broken table never ships.
            tracing::error!("the built-in price table does not parse: {e}");
            TableFile {
                date: String::new(),
                models: BTreeMap::new(),
            }
        })
    })
}

/// FNV-1a, 64 bits: a stable hash of the table's bytes (no crypto needed to tell versions apart).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The table's hash, as the report shows it.
pub fn table_hash() -> String {
    format!("{:016x}", fnv1a64(TABLE.as_bytes()))
}

/// The names a model may be listed under, most exact first: as given (lowercased), without a
/// `vendor/` prefix, then without `-latest` or a date suffix (`-20250929`, `-2024-08-06`).
fn names_of(model: &str) -> Vec<String> {
    let lower = model.trim().to_ascii_lowercase();
    let bare = lower.rsplit('/').next().unwrap_or(&lower).to_string();
    let mut names = vec![lower.clone(), bare.clone()];
    let undated = strip_date(bare.trim_end_matches("-latest"));
    names.push(undated.to_string());
    names.dedup();
    names
}

/// `name` without a trailing `-YYYYMMDD` or `-YYYY-MM-DD`.
fn strip_date(name: &str) -> &str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, tail)) = name.rsplit_once('-')
        && tail.len() == 8
        && digits(tail)
    {
        return head;
    }
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    if let [d, m, y, head] = parts[..]
        && y.len() == 4
        && m.len() == 2
        && d.len() == 2
        && [d, m, y].iter().all(|p| digits(p))
    {
        return head;
    }
    name
}

/// The table's entry for `model` and its price.
pub fn lookup(model: &str) -> Option<(String, Price)> {
    let models = &table().models;
    names_of(model).into_iter().find_map(|name| {
        models
            .iter()
            .find(|(key, e)| **key == name || e.aliases.contains(&name))
            .map(|(key, e)| {
                let price = Price {
                    input: e.input,
                    output: e.output,
                    cached_input: e.cached_input,
                    cache_write: e.cache_write,
                };
                (key.clone(), price)
            })
    })
}

/// One call's tokens by class: every prompt token in `input`, of which `cached` were read from
/// the cache and `cache_write` written to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl Tokens {
    pub fn of(r: &ChatResponse) -> Tokens {
        Tokens {
            input: r.tokens_in,
            cached: r.cached_tokens.unwrap_or(0),
            cache_write: r.cache_write_tokens.unwrap_or(0),
            output: r.tokens_out,
        }
    }
}

/// The dollars of `t` at `p`.
pub fn dollars(p: &Price, t: Tokens) -> f64 {
    let read = p.cached_input.unwrap_or(p.input);
    let write = p.cache_write.unwrap_or(p.input * CACHE_WRITE_FACTOR);
    let cached = t.cached.min(t.input);
    let written = t.cache_write.min(t.input - cached);
    let plain = t.input - cached - written;
    (plain as f64 * p.input
        + cached as f64 * read
        + written as f64 * write
        + t.output as f64 * p.output)
        / 1e6
}

/// The price of the run's model, and where it came from.
#[derive(Debug, Clone)]
pub struct Pricing {
    pub info: PriceInForce,
    /// The table's entry the user's price replaces, when it does.
    pub shadowed: Option<(String, Price)>,
}

impl Pricing {
    /// The user's price wins; else the table's (wherever the model is served); else a model
    /// on this machine is free, and one elsewhere has no price.
    pub fn resolve(model: &str, user: Option<Price>, local: bool) -> Pricing {
        let found = lookup(model);
        let (source, entry, price) = match (user, &found) {
            (Some(p), _) => (PriceSource::User, None, Some(p)),
            (None, Some((entry, p))) => (PriceSource::Table, Some(entry.clone()), Some(*p)),
            (None, None) if local => (PriceSource::Local, None, Some(FREE)),
            (None, None) => (PriceSource::Unknown, None, None),
        };
        Pricing {
            info: PriceInForce {
                model: model.to_string(),
                source,
                entry,
                price,
                table_hash: table_hash(),
                table_date: table().date.clone(),
            },
            shadowed: found.filter(|_| user.is_some()),
        }
    }

    pub fn price(&self) -> Option<Price> {
        self.info.price
    }

    /// A note when the user's price replaces the table's entry for the model.
    pub fn shadow_note(&self) -> Option<String> {
        let ((entry, table), user) = (self.shadowed.as_ref()?, self.price()?);
        Some(format!(
            "note: --price {} replaces the price table's {} for {entry}; the user's price wins",
            shown(&user),
            shown(table)
        ))
    }

    /// One answered call on the books.
    pub fn call(&self, round: u32, r: &ChatResponse) -> CallCost {
        let t = Tokens::of(r);
        CallCost {
            round,
            tokens_in: t.input,
            tokens_cached: t.cached,
            tokens_cache_write: t.cache_write,
            tokens_out: t.output,
            cost_usd: self.price().map(|p| dollars(&p, t)),
        }
    }

    /// The most `request` can cost: every prompt token at the dearest input rate (no token
    /// is shorter than a byte, so the bytes bound the count), and a full answer.
    pub fn worst_case(&self, request: &ChatRequest) -> Option<f64> {
        let p = self.price()?;
        let bytes = request.system.len()
            + request
                .messages
                .iter()
                .map(|m| m.content.len())
                .sum::<usize>();
        // A chat template's few tokens per turn.
        let prompt = bytes as u64 + 16 * (request.messages.len() as u64 + 2);
        let dearest = p
            .input
            .max(p.cache_write.unwrap_or(p.input * CACHE_WRITE_FACTOR));
        Some((prompt as f64 * dearest + f64::from(request.max_tokens) * p.output) / 1e6)
    }

    /// The least any call can reserve: a full answer and no prompt.
    pub fn least_call(&self, max_answer_tokens: u32) -> f64 {
        self.price()
            .map_or(0.0, |p| f64::from(max_answer_tokens) * p.output / 1e6)
    }
}

const FREE: Price = Price {
    input: 0.0,
    output: 0.0,
    cached_input: Some(0.0),
    cache_write: Some(0.0),
};

/// The price with its cache-read rate spelled out (the input price when it has none).
pub fn with_cached(p: &Price) -> Price {
    Price {
        cached_input: Some(p.cached_input.unwrap_or(p.input)),
        ..*p
    }
}

/// The date the built-in table was transcribed.
pub fn table_date() -> String {
    table().date.clone()
}

/// `IN,OUT[,CACHED_IN]`, as the user writes it.
pub fn shown(p: &Price) -> String {
    match p.cached_input {
        Some(c) => format!("{},{},{}", p.input, p.output, c),
        None => format!("{},{}", p.input, p.output),
    }
}

/// `--price IN,OUT[,CACHED_IN]`: dollars per million tokens, none negative.
pub fn parse_price(text: &str) -> Result<Price, String> {
    let bad = || {
        format!(
            "`{text}` is not a price: write IN,OUT[,CACHED_IN] in dollars per million tokens, \
             e.g. --price 3,15,0.3"
        )
    };
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| !p.is_finite() || *p < 0.0) {
        return Err(bad());
    }
    Ok(Price {
        input: parts[0],
        output: parts[1],
        cached_input: parts.get(2).copied(),
        cache_write: None,
    })
}

/// `--max-cost` needs a price: refused before anything starts when the model has none.
pub fn check_cap(pricing: &Pricing, max_cost: Option<f64>) -> Result<(), UsageError> {
    match max_cost {
        Some(cap) if pricing.price().is_none() => Err(UsageError(format!(
            "--max-cost {cap}: the price of model `{}` is unknown (not in improve's price \
             table, not a local server); pass its price as --price IN,OUT[,CACHED_IN] in \
             dollars per million tokens",
            pricing.info.model
        ))),
        _ => Ok(()),
    }
}

/// Dollars as the summaries show them: cents from a dollar, a tenth of a cent from a cent,
/// a hundredth of a cent below.
pub fn usd(x: f64) -> String {
    match x.abs() {
        a if a == 0.0 || a >= 1.0 => format!("${x:.2}"),
        a if a >= 0.01 => format!("${x:.3}"),
        _ => format!("${x:.4}"),
    }
}

/// The run's dollars so far; None when a call had no price or the model has none.
pub fn run_total(state: &RunState) -> Option<f64> {
    let (usd, unpriced) = state.cost();
    let priced = state.pricing.as_ref().is_none_or(|p| p.price.is_some());
    (unpriced == 0 && priced).then_some(usd)
}

/// The run's dollars as a progress line shows them: only for a priced model that is not free.
pub fn running_total(state: &RunState) -> Option<String> {
    let paid = state
        .pricing
        .as_ref()
        .is_some_and(|p| matches!(p.source, PriceSource::User | PriceSource::Table));
    run_total(state).filter(|_| paid).map(usd)
}

/// The run's dollars and cached tokens as `status` and the report show them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostView {
    /// The run's dollars (null: unknown, a call had no price).
    pub cost_usd: Option<f64>,
    /// Of them, the latest invocation's.
    pub cost_usd_invocation: Option<f64>,
    /// `--max-cost` of the latest invocation.
    pub max_cost_usd: Option<f64>,
    /// Prompt tokens read from the server's cache, and written to it.
    pub tokens_cached: u64,
    pub tokens_cache_write: u64,
    /// Percent of the prompt tokens read from the cache (null before any).
    pub cached_share: Option<f64>,
    /// The price the calls were costed at, where it came from, and the table's hash.
    pub price: Option<PriceInForce>,
}

impl CostView {
    pub fn of(state: &RunState) -> CostView {
        let total = run_total(state);
        let (tokens_in, _) = state.tokens();
        let cached = state.tokens_cached();
        CostView {
            cost_usd: total.map(cents4),
            cost_usd_invocation: total.map(|t| cents4(t - state.invocation_start_cost_usd)),
            max_cost_usd: state.settings.max_cost,
            tokens_cached: cached,
            tokens_cache_write: state.iterations.iter().map(|i| i.tokens_cache_write).sum(),
            cached_share: share(cached, tokens_in),
            price: state.pricing.clone(),
        }
    }

    /// One line: the dollars, or why they are unknown, and the cached share.
    pub fn text(&self) -> String {
        let model = self
            .price
            .as_ref()
            .map_or("the model", |p| p.model.as_str());
        let dollars = match (self.cost_usd, self.cost_usd_invocation) {
            (Some(run), Some(now)) => {
                format!("cost {} this invocation, {} in all", usd(now), usd(run))
            }
            _ => format!("cost unknown: no price for {model} (pass --price IN,OUT[,CACHED_IN])"),
        };
        let source = self.price.as_ref().map(|p| match (&p.price, &p.entry) {
            (Some(price), Some(entry)) => format!(
                " at {} $/M tokens ({} {entry}, table {})",
                shown(price),
                p.source.as_str(),
                p.table_hash
            ),
            (Some(price), None) => {
                format!(" at {} $/M tokens ({})", shown(price), p.source.as_str())
            }
            (None, _) => String::new(),
        });
        let cached = self
            .cached_share
            .map(|s| format!("; {s:.1}% of prompt tokens read from cache"))
            .unwrap_or_default();
        format!("{dollars}{}{cached}", source.unwrap_or_default())
    }
}

/// `part` as a percent of `whole`, to a tenth (None for an empty whole).
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// Dollars to a hundredth of a cent, as JSON carries them.
pub fn cents4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The cap of this invocation, held across the calls in flight.
#[derive(Debug)]
pub struct Budget {
    cap: f64,
    book: Mutex<Book>,
    /// Told when a reservation is settled or released: a call waiting for room looks again.
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Book {
    /// Settled: what the answered calls of this invocation cost.
    spent: f64,
    /// The worst cases of the calls in flight.
    reserved: f64,
}

/// A call's worst case, held until it is settled (or released when dropped: the call was not
/// answered).
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a Budget,
    amount: f64,
}

impl Budget {
    pub fn new(cap: f64) -> Budget {
        Budget {
            cap,
            book: Mutex::new(Book::default()),
            freed: tokio::sync::Notify::new(),
        }
    }

    pub fn cap(&self) -> f64 {
        self.cap
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `worst` if the settled, the reserved and it stay within the cap; None when
    /// the call would pass it (it must not be made).
    pub fn reserve(&self, worst: f64) -> Option<Reservation<'_>> {
        let mut book = self.book();
        if book.spent + book.reserved + worst > self.cap {
            return None;
        }
        book.reserved += worst;
        Some(Reservation {
            budget: self,
            amount: worst,
        })
    }

    /// [`Budget::reserve`], waiting while calls in flight hold the room `worst` needs: they
    /// may cost less than their worst case. None once the settled cost alone leaves no room.
    pub async fn reserve_waiting(&self, worst: f64) -> Option<Reservation<'_>> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(r) = self.reserve(worst) {
                return Some(r);
            }
            let book = *self.book();
            if book.spent + worst > self.cap || book.reserved <= 0.0 {
                return None;
            }
            freed.await;
        }
    }

    /// What this invocation's answered calls cost.
    pub fn spent(&self) -> f64 {
        self.book().spent
    }

    /// Whether a call reserving `least` could still start.
    pub fn room_for(&self, least: f64) -> bool {
        let book = self.book();
        book.spent + book.reserved + least <= self.cap
    }
}

impl Reservation<'_> {
    /// The call answered and cost `actual`.
    pub fn settle(self, actual: f64) {
        self.budget.book().spent += actual;
        // Dropped here: the reservation is released and the waiting calls told.
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        {
            let mut book = self.budget.book();
            book.reserved = (book.reserved - self.amount).max(0.0);
        }
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_has_a_stable_hash_and_a_date() {
        assert!(table().models.len() >= 15, "{:?}", table().models.keys());
        assert_eq!(table().date, "2026-12-03");
        assert_eq!(table_hash().len(), 16);
        assert_eq!(table_hash(), table_hash());
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        for (name, e) in &table().models {
            assert!(e.input > 0.0 && e.output >= e.input, "{name}");
            assert!(e.cached_input.is_some_and(|c| c <= e.input), "{name}");
        }
    }

    #[test]
    fn names_match_exactly_by_alias_or_without_a_date_or_vendor() {
        let entry = |m: &str| lookup(m).map(|(e, _)| e);
        assert_eq!(entry("gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(entry("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        assert_eq!(entry("gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            entry("gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            entry("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            entry("claude-sonnet-4-0").as_deref(),
            Some("claude-sonnet-4")
        );
        assert_eq!(
            entry("claude-3-5-haiku-latest").as_deref(),
            Some("claude-3-5-haiku")
        );
        assert_eq!(
            entry("anthropic/claude-haiku-4-5").as_deref(),
            Some("claude-haiku-4-5")
        );
        assert_eq!(entry("GPT-4.1-Nano").as_deref(), Some("gpt-4.1-nano"));
        // No prefix matching: a cousin is not the model.
        assert_eq!(entry("gpt-4o-mini-tts"), None);
        assert_eq!(entry("qwen2.5-coder-7b"), None);
        assert_eq!(entry("gpt-4"), None);
    }

    #[test]
    fn a_call_costs_its_classes_at_their_rates() {
        let p = lookup("claude-sonnet-4-5").unwrap().1;
        // 10,000 prompt tokens: 6,000 read from the cache, 1,000 written, 3,000 plain.
        let t = Tokens {
            input: 10_000,
            cached: 6_000,
            cache_write: 1_000,
            output: 2_000,
        };
        let expected = (3_000.0 * 3.0 + 6_000.0 * 0.3 + 1_000.0 * 3.75 + 2_000.0 * 15.0) / 1e6;
        assert!((dollars(&p, t) - expected).abs() < 1e-12);
        // A user price without a cache rate: reads at the input price, writes at 1.25 times.
        let user = parse_price("2,8").unwrap();
        let t = Tokens {
            input: 1_000_000,
            cached: 500_000,
            cache_write: 100_000,
            output: 0,
        };
        assert!((dollars(&user, t) - (0.4 * 2.0 + 0.5 * 2.0 + 0.1 * 2.5)).abs() < 1e-9);
    }

    #[test]
    fn prices_parse_or_say_how_to_write_them() {
        let p = parse_price("3, 15,0.3").unwrap();
        assert_eq!((p.input, p.output, p.cached_input), (3.0, 15.0, Some(0.3)));
        for bad in ["", "3", "3,x", "3,15,1,2", "-1,2", "1,inf", "a,b"] {
            let e = parse_price(bad).unwrap_err();
            assert!(e.contains("IN,OUT[,CACHED_IN]"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_user_wins_then_the_table_then_local_is_free_and_elsewhere_unknown() {
        let user = parse_price("1,2").ok();
        let p = Pricing::resolve("gpt-4o", user, false);
        assert_eq!(p.info.source, PriceSource::User);
        let note = p.shadow_note().unwrap();
        assert!(
            note.contains("gpt-4o") && note.contains("user's price wins"),
            "{note}"
        );
        let p = Pricing::resolve("gpt-4o", None, true);
        assert_eq!(p.info.source, PriceSource::Table);
        assert!(p.shadow_note().is_none());
        let p = Pricing::resolve("my-llama", None, true);
        assert_eq!(p.info.source, PriceSource::Local);
        assert_eq!(p.price().map(|p| p.input), Some(0.0));
        let p = Pricing::resolve("my-llama", None, false);
        assert_eq!(p.info.source, PriceSource::Unknown);
        assert!(p.price().is_none());
        let e = check_cap(&p, Some(5.0)).unwrap_err().to_string();
        assert!(e.contains("--price IN,OUT") && !e.contains('\n'), "{e}");
        assert!(check_cap(&p, None).is_ok());
    }

    #[test]
    fn the_ledger_never_lets_calls_in_flight_pass_the_cap() {
        let budget = Budget::new(1.0);
        let a = budget.reserve(0.4).unwrap();
        let b = budget.reserve(0.4).unwrap();
        // A third worst case would pass the cap together with the two in flight.
        assert!(budget.reserve(0.4).is_none());
        a.settle(0.1);
        // Settled to its real cost: room again.
        let c = budget.reserve(0.4).unwrap();
        drop(b); // not answered: released, nothing spent
        c.settle(0.3);
        assert!((budget.spent() - 0.4).abs() < 1e-12);
        assert!(budget.room_for(0.6));
        assert!(!budget.room_for(0.61));
    }

    /// A call that fits once the calls in flight settle waits for them; one that the settled
    /// cost alone leaves no room for is refused at once.
    #[tokio::test]
    async fn a_call_waits_for_calls_in_flight_to_settle() {
        let budget = Budget::new(1.0);
        let a = budget.reserve(0.7).unwrap();
        let waiting = budget.reserve_waiting(0.5);
        let settle = async {
            tokio::task::yield_now().await;
            a.settle(0.2);
        };
        let (got, ()) = tokio::join!(waiting, settle);
        let got = got.expect("room once the first settled");
        got.settle(0.5);
        assert!((budget.spent() - 0.7).abs() < 1e-12);
        assert!(budget.reserve_waiting(0.4).await.is_none());
    }

    /// A run's dollars are unknown when a call had no price, or an iteration was saved before
    /// calls were priced; a free local model's are known (zero).
    #[test]
    fn the_run_total_is_unknown_rather_than_zero() {
        let mut state = crate::state::tests::sample_state();
        let p = Pricing::resolve("gpt-4o", None, false);
        let answer = ChatResponse {
            text: String::new(),
            tokens_in: 1_000,
            tokens_out: 100,
            finish_reason: None,
            attempts: 1,
            stopped: None,
            speed: None,
            cached_tokens: Some(500),
            cache_write_tokens: None,
        };
        let call = p.call(0, &answer);
        let expected = (500.0 * 2.5 + 500.0 * 1.25 + 100.0 * 10.0) / 1e6;
        assert!((call.cost_usd.unwrap() - expected).abs() < 1e-12);
        for it in &mut state.iterations {
            it.tokens_in = call.tokens_in;
            it.cost_usd = expected;
            it.calls = vec![call];
        }
        state.pricing = Some(p.info.clone());
        let n = state.iterations.len() as f64;
        assert!(run_total(&state).is_some_and(|t| (t - n * expected).abs() < 1e-12));
        // Saved before prices: tokens without calls on the books.
        state.iterations[0].calls.clear();
        assert_eq!(run_total(&state), None);
        assert_eq!(state.iterations[0].cost(), None);
        state.iterations[0].calls = vec![call];
        // A model with no price: unknown even before its first call.
        state.pricing = Some(Pricing::resolve("mine", None, false).info);
        assert_eq!(run_total(&state), None);
    }

    #[test]
    fn worst_case_bounds_the_prompt_by_its_bytes_and_a_full_answer() {
        let p = Pricing::resolve("x", parse_price("1,10").ok(), false);
        let req = ChatRequest {
            tag: "t".into(),
            system: "s".repeat(1_000),
            messages: vec![crate::llm::ChatMessage {
                role: crate::llm::Role::User,
                content: "u".repeat(3_000),
            }],
            max_tokens: 500,
            temperature: 0.2,
            cache_prefix: false,
        };
        let worst = p.worst_case(&req).unwrap();
        let prompt = 4_000.0 + 16.0 * 3.0;
        assert!((worst - (prompt * 1.25 + 500.0 * 10.0) / 1e6).abs() < 1e-12);
        assert!(
            Pricing::resolve("x", None, false)
                .worst_case(&req)
                .is_none()
        );
    }
}
