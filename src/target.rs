//! Choosing what the next iteration works on: the package's modules, least targeted first, then
//! least covered, and the focus areas in rotation. Also gathers what the prompt shows about a
//! module: its import name and the existing tests that import it.

use std::path::Path;

use crate::state::{Coverage, RunState};

/// A module of the package, as a path relative to the repo (`pkg/sub/mod.py`).
pub fn list_modules(repo_root: &Path, package: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(repo_root, &repo_root.join(package), &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if !name.starts_with('.') && name != "__pycache__" && path.join("__init__.py").is_file()
            {
                walk(root, &path, out);
            }
        } else if meta.is_file() && name.ends_with(".py") {
            // An `__init__.py` that only re-exports or documents has nothing to test.
            if name == "__init__.py" && !defines_something(&path) {
                continue;
            }
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
}

fn defines_something(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("def ") || l.starts_with("async def ") || l.starts_with("class ")
            })
        })
        .unwrap_or(false)
}

/// `src/pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/__init__.py` -> `pkg`.
pub fn import_name(module_path: &str, package: &str) -> String {
    let pkg_parent = Path::new(package)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rel = if pkg_parent.is_empty() {
        module_path
    } else {
        module_path
            .strip_prefix(&format!("{pkg_parent}/"))
            .unwrap_or(module_path)
    };
    let rel = rel.strip_suffix(".py").unwrap_or(rel);
    let rel = rel.strip_suffix("/__init__").unwrap_or(rel);
    rel.replace('/', ".")
}

/// The next target: fewest times targeted in this run, then lowest coverage, then name. Modules in
/// `busy` (targeted by an iteration still in flight) are skipped while others remain.
pub fn choose_target(
    modules: &[String],
    state: &RunState,
    coverage: Option<&Coverage>,
    busy: &[String],
) -> Option<String> {
    let times = |m: &str| state.iterations.iter().filter(|i| i.target == m).count();
    let cov = |m: &str| {
        coverage
            .and_then(|c| c.modules.get(m).copied())
            .unwrap_or(0.0)
    };
    let pool: Vec<&String> = modules.iter().filter(|m| !busy.contains(m)).collect();
    let pool = if pool.is_empty() {
        modules.iter().collect()
    } else {
        pool
    };
    pool.into_iter()
        .min_by(|a, b| {
            times(a)
                .cmp(&times(b))
                .then(cov(a).total_cmp(&cov(b)))
                .then(a.cmp(b))
        })
        .cloned()
}

pub fn focus_for(n: u32, focus: &[String]) -> String {
    if focus.is_empty() {
        return "edge cases".into();
    }
    focus[(n.saturating_sub(1) as usize) % focus.len()].clone()
}

/// Test files under `tests_dir` that import `import_name`, as (path, text), at most `limit`.
pub fn tests_importing(
    repo_root: &Path,
    tests_dir: &str,
    import_name: &str,
    limit: usize,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect_py(&repo_root.join(tests_dir), &mut files);
    files.sort();
    let (parent, leaf) = match import_name.rsplit_once('.') {
        Some((p, l)) => (p.to_string(), l.to_string()),
        None => (String::new(), import_name.to_string()),
    };
    let mut out = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let imports = text.lines().any(|l| {
            let l = l.trim();
            l.starts_with(&format!("from {import_name} import"))
                || l == format!("import {import_name}")
                || l.starts_with(&format!("import {import_name} "))
                || (!parent.is_empty()
                    && l.starts_with(&format!("from {parent} import"))
                    && l.split(|c: char| !c.is_alphanumeric() && c != '_')
                        .any(|w| w == leaf))
        });
        if imports && let Ok(rel) = path.strip_prefix(repo_root) {
            out.push((rel.display().to_string(), text));
            if out.len() == limit {
                break;
            }
        }
    }
    out
}

fn collect_py(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                collect_py(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_names() {
        assert_eq!(import_name("pkg/a.py", "pkg"), "pkg.a");
        assert_eq!(import_name("src/pkg/sub/b.py", "src/pkg"), "pkg.sub.b");
        assert_eq!(import_name("pkg/__init__.py", "pkg"), "pkg");
    }

    #[test]
    fn lists_modules_skipping_empty_init_and_non_packages() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::create_dir_all(p.join("pkg/sub")).unwrap();
        std::fs::create_dir_all(p.join("pkg/data")).unwrap();
        std::fs::write(
            p.join("pkg/__init__.py"),
            "\"\"\"Docs only.\"\"\"\nfrom .a import x\n",
        )
        .unwrap();
        std::fs::write(p.join("pkg/a.py"), "x = 1\n").unwrap();
        std::fs::write(p.join("pkg/sub/__init__.py"), "def y():\n    return 2\n").unwrap();
        std::fs::write(p.join("pkg/data/b.py"), "z = 3\n").unwrap();
        assert_eq!(
            list_modules(p, "pkg"),
            vec!["pkg/a.py", "pkg/sub/__init__.py"]
        );
    }

    #[test]
    fn finds_tests_importing_a_module() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::create_dir_all(p.join("tests")).unwrap();
        std::fs::write(p.join("tests/test_a.py"), "from pkg.a import f\n").unwrap();
        std::fs::write(p.join("tests/test_b.py"), "from pkg import b, c\n").unwrap();
        std::fs::write(p.join("tests/test_c.py"), "from pkg.ab import f\n").unwrap();
        let found: Vec<String> = tests_importing(p, "tests", "pkg.a", 5)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(found, vec!["tests/test_a.py"]);
        let found: Vec<String> = tests_importing(p, "tests", "pkg.b", 5)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(found, vec!["tests/test_b.py"]);
    }

    #[test]
    fn focus_rotates() {
        let f = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            [focus_for(1, &f), focus_for(2, &f), focus_for(3, &f)],
            ["a", "b", "a"]
        );
    }
}
