//! The plain serde types saved in state.json. They import nothing else of the crate, so that
//! what a saved file means can be read here alone.

mod settings;

pub use settings::*;
