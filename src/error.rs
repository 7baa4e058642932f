//! Error kinds that decide the exit code. Library modules have their own `thiserror` enums; the
//! edges carry them in `anyhow` and `main` maps the few kinds below to the contract's codes.

/// A mistake in how the tool was called (exit code 2). The message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A problem the user can fix in their repository or environment (exit code 1), reported as one
/// line without a chain of causes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// How a run ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every iteration asked for is done (exit 0).
    Complete,
    /// A limit or the LLM stopped the run; it can be resumed (exit 3).
    Stopped(String),
    /// A signal stopped the run; it can be resumed (exit 130).
    Interrupted,
}

impl RunEnd {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunEnd::Complete => 0,
            RunEnd::Stopped(_) => 3,
            RunEnd::Interrupted => 130,
        }
    }
}
