//! The paths other modules name settings by. Every setting is declared once, in the table of
//! schema/settings.rs; the settings module merges the layers. These re-exports keep
//! `crate::config::...` working.

pub use crate::schema::{DEFAULT_FOCUS, OneOrMany, RunSettings};
pub use crate::settings::{
    FileConfig, LoadedFile, Resolved, default_test_cmd, load_file_config, parse_test_cmd,
    repo_root, state_dir,
};
