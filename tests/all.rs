//! One integration-test binary (faster to link than one per file); the tests live in `suite/`.
mod suite;
