//! `improve status --settings`: every resolved setting and where it came from.

use std::process::Command;

use super::*;

/// The demo's run, interrupted, seen with a flag, an environment variable and a config file on
/// top of its saved settings.
#[test]
fn status_settings_names_each_source() {
    let tmp = tempfile::tempdir().unwrap();
    let demo_dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_improve"))
        .args(["demo", "--iterations", "1", "--test-cmd", &test_cmd()])
        .arg("--repo")
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // As a killed run leaves it: unfinished, so the next run resumes it.
    let state_file = demo_dir.join(".improve/state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["status"] = "interrupted".into();
    std::fs::write(&state_file, state.to_string()).unwrap();
    std::fs::write(
        demo_dir.join("improve.toml"),
        "reruns = 3\nmax-repairs = 1\n",
    )
    .unwrap();
    let show = |args: &[&str]| {
        let mut c = improve(&demo_dir);
        c.env("IMPROVE_MODEL", "from-env").args(args);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let text = show(&["status", "--settings", "--jobs", "2"]);
    let json: serde_json::Value =
        serde_json::from_str(&show(&["--mutants", "4", "status", "--settings", "--json"])).unwrap();
    let source = |name: &str| {
        let row = json
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        (row["value"].clone(), row["source"].clone())
    };
    assert_eq!(source("mutants"), ("4".into(), "flag".into()));
    assert_eq!(source("model"), ("from-env".into(), "env".into()));
    assert_eq!(source("reruns"), ("3".into(), "file".into()));
    assert_eq!(source("provider"), ("replay".into(), "saved run".into()));
    assert_eq!(source("iterations"), ("10".into(), "default".into()));
    let root = demo_dir.canonicalize().unwrap();
    let owned = [
        (regex_escape(&root.display().to_string()), "[demo]"),
        (regex_escape(&demo_dir.display().to_string()), "[demo]"),
        (regex_escape(&python()), "[python]"),
        (r"\b[0-9a-f]{40}\b".to_string(), "[sha]"),
    ];
    let filters: Vec<(&str, &str)> = owned.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!("status_settings", text);
    });
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
