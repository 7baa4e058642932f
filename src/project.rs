//! What the project's code is: the top-level packages and modules that its coverage and
//! packaging configuration declare (`[tool.coverage.run] source`, setuptools, hatch, flit,
//! poetry, pdm), else what its tree holds at the root or under `src/` (regular packages, PEP 420
//! namespace packages, single modules), leaving out tests (a package of nothing but tests too),
//! stub-only packages, docs, examples, build output and the project's own tooling; and the
//! folders those are imported from ([`source_roots`], [`import_name`]). Read from the committed
//! tree, which is what the worktrees test.
//!
//! Where tests live is pytest's to say: see [`crate::layout`].

use std::collections::{BTreeMap, BTreeSet};

use crate::ini;

/// The committed files of the project (paths with `/`) and the text of its configuration files.
#[derive(Debug, Default, Clone)]
pub struct ProjectTree {
    files: BTreeSet<String>,
    texts: BTreeMap<String, String>,
    /// pyproject.toml, parsed once (None: absent or not valid TOML).
    pyproject: Option<toml::Table>,
}

/// The configuration files whose text detection reads.
pub const CONFIG_FILES: &[&str] = &[
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    ".coveragerc",
    "tox.ini",
];

impl ProjectTree {
    /// `files` are every committed path; `read` gives the text of one of [`CONFIG_FILES`].
    pub fn new(
        files: impl IntoIterator<Item = String>,
        read: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let files: BTreeSet<String> = files.into_iter().collect();
        let texts = CONFIG_FILES
            .iter()
            .filter(|name| files.contains(**name))
            .filter_map(|name| read(name).map(|t| (name.to_string(), t)))
            .collect::<BTreeMap<String, String>>();
        let pyproject = texts
            .get("pyproject.toml")
            .and_then(|t| toml::from_str(t).ok());
        ProjectTree {
            files,
            texts,
            pyproject,
        }
    }

    pub fn has_file(&self, path: &str) -> bool {
        self.files.contains(path)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        let prefix = format!("{path}/");
        self.files
            .range(prefix.clone()..)
            .next()
            .is_some_and(|f| f.starts_with(&prefix))
    }

    /// Direct children of `dir` ("" for the root): (name, is a folder).
    fn children(&self, dir: &str) -> BTreeMap<String, bool> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out = BTreeMap::new();
        for f in self.files.range(prefix.clone()..) {
            let Some(rest) = f.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((name, _)) => {
                    out.insert(name.to_string(), true);
                }
                None => {
                    out.entry(rest.to_string()).or_insert(false);
                }
            }
        }
        out
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.texts.get(name).map(String::as_str)
    }

    fn pyproject(&self) -> Option<&toml::Table> {
        self.pyproject.as_ref()
    }
}

/// Folders at the top of a tree that hold no code under test.
const NOT_CODE_DIRS: &[&str] = &[
    "tests",
    "test",
    "testing",
    "docs",
    "doc",
    "examples",
    "example",
    "benchmarks",
    "benchmark",
    "bench",
    "build",
    "dist",
    "venv",
    "env",
    "scripts",
    "tools",
    "ci",
    "htmlcov",
    "site",
    "node_modules",
];

/// Modules at the top of a tree that are the project's tooling, not its code.
const NOT_CODE_MODULES: &[&str] = &[
    "setup",
    "conftest",
    "noxfile",
    "fabfile",
    "tasks",
    "manage",
    "runtests",
    "run_tests",
    "ez_setup",
    "bootstrap",
    "versioneer",
    "conf",
    "__main__",
];

/// Folders that hold top-level code without being a package themselves, whatever the packaging
/// metadata says: the ones it declares come on top (see [`source_roots`]).
const SOURCE_ROOTS: &[&str] = &["src", "lib"];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `My-Project.name` -> `my_project_name`, to compare with an import name.
fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// The folder on `sys.path` from which `path` (a package folder or a module file) is imported:
/// the deepest of `roots` (the folders the packaging metadata imports packages from, see
/// [`source_roots`]) and `src` and `lib` that holds it, else the repository's root (``):
/// `code` for `code/png.py` when setup.cfg says `package_dir = =code`, `src` for `src/pkg`, ``
/// for `pkg` and for a namespace portion such as `jaraco/functools`.
pub fn import_root(path: &str, roots: &[String]) -> String {
    roots
        .iter()
        .map(String::as_str)
        .chain(SOURCE_ROOTS.iter().copied())
        .filter(|r| {
            !r.is_empty()
                && path
                    .strip_prefix(*r)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|r| r.len())
        .unwrap_or("")
        .to_string()
}

/// `src/pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/__init__.py` -> `pkg`; `six.py` -> `six`;
/// `code/png.py` -> `png` when `roots` holds `code`. `roots` as in [`import_root`].
pub fn import_name(module_path: &str, roots: &[String]) -> String {
    let root = import_root(module_path, roots);
    let rel = if root.is_empty() {
        module_path
    } else {
        &module_path[root.len() + 1..]
    };
    dotted(rel)
}

/// A path relative to its import root as a dotted name.
fn dotted(rel: &str) -> String {
    let rel = rel.strip_suffix(".py").unwrap_or(rel);
    let rel = rel.strip_suffix("/__init__").unwrap_or(rel);
    rel.replace('/', ".")
}

/// The folders the packaging metadata says packages are imported from, besides the
/// repository's root: setuptools' `package_dir` for the empty name (setup.cfg, setup.py,
/// `[tool.setuptools] package-dir`) and the `where` of its package finder, poetry's `from`,
/// pdm's `package-dir`, hatch's `sources` and the folders its `packages` are in. Only folders
/// the tree has, each once, in the order declared. `src` and `lib` count without a
/// declaration (see [`import_root`]).
pub fn source_roots(tree: &ProjectTree) -> Vec<String> {
    let mut declared = setuptools_finder(tree).roots;
    if let Some(tool) = tree.pyproject().and_then(|t| t.get("tool")) {
        let at = |keys: &[&str]| keys.iter().try_fold(tool, |v, k| v.get(*k));
        if let Some(toml::Value::Array(list)) = at(&["poetry", "packages"]) {
            declared.extend(
                list.iter()
                    .filter_map(|p| p.get("from").and_then(|v| v.as_str()))
                    .map(str::to_string),
            );
        }
        declared.extend(strings(at(&["pdm", "build", "package-dir"])));
        for keys in [
            &["hatch", "build", "targets", "wheel", "sources"][..],
            &["hatch", "build", "sources"],
        ] {
            match at(keys) {
                Some(toml::Value::Array(_)) => declared.extend(strings(at(keys))),
                // `{"src" = ""}`: the prefix that is cut off the import path.
                Some(toml::Value::Table(t)) => declared.extend(
                    t.iter()
                        .filter(|(_, to)| to.as_str() == Some(""))
                        .map(|(from, _)| from.clone()),
                ),
                _ => {}
            }
        }
        for keys in [
            &["hatch", "build", "targets", "wheel", "packages"][..],
            &["hatch", "build", "packages"],
        ] {
            declared.extend(
                strings(at(keys))
                    .iter()
                    .filter_map(|p| p.trim_matches('/').rsplit_once('/'))
                    .map(|(parent, _)| parent.to_string()),
            );
        }
    }
    let mut out: Vec<String> = Vec::new();
    for root in declared {
        let root = clean_dir(&root);
        if !root.is_empty() && tree.is_dir(&root) && !out.contains(&root) {
            out.push(root);
        }
    }
    out
}

/// `./code/` -> `code`; `.` -> `` (the repository's root).
fn clean_dir(dir: &str) -> String {
    let dir = dir.trim().trim_start_matches("./").trim_matches('/');
    if dir == "." { "" } else { dir }.to_string()
}

/// Whether `path` is one of `packages` (folders or module files) or lies inside one.
pub fn in_packages(path: &str, packages: &[String]) -> bool {
    packages
        .iter()
        .any(|k| path == k || path.starts_with(&format!("{k}/")))
}

/// The project's code under test: package folders and module files, relative to the repo.
/// Declared configuration wins; the tree decides otherwise. An error says what to pass.
pub fn detect_packages(tree: &ProjectTree) -> Result<Vec<String>, String> {
    let project = project_name(tree);
    let declared = declared_packages(tree, project.as_deref());
    let found = if declared.is_empty() {
        from_tree(tree, project.as_deref(), &source_roots(tree))
    } else {
        declared
    };
    if found.is_empty() {
        return Err(
            "no Python code found (no package, namespace package or module at the root or \
             under src/, and none declared in the packaging config): pass --package PATH"
                .into(),
        );
    }
    Ok(found)
}

fn project_name(tree: &ProjectTree) -> Option<String> {
    let from_toml = tree.pyproject().and_then(|t| {
        t.get("project")
            .and_then(|p| p.get("name"))
            .or_else(|| t.get("tool")?.get("poetry")?.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    });
    from_toml.or_else(|| {
        let cfg = ini::parse(tree.text("setup.cfg")?);
        cfg.get("metadata", "name").map(str::to_string)
    })
}

/// What the configuration names, reduced to the top-level paths that exist in the tree.
fn declared_packages(tree: &ProjectTree, project: Option<&str>) -> Vec<String> {
    let candidates = [
        coverage_source(tree),
        setuptools_packages(tree, project),
        backend_packages(tree, project),
    ];
    for found in candidates {
        let mut paths: Vec<String> = found
            .into_iter()
            .filter(|p| tree.is_dir(p) || tree.has_file(p))
            // A project may measure its tests too (`source = ["slugify", "test"]`).
            .filter(|p| !is_tests_path(p) && !is_tests_package(tree, p, project))
            // A PEP 561 stub package (`wrapt-stubs`): nothing runs there.
            .filter(|p| is_python_code(tree, p))
            .collect();
        paths.sort();
        paths.dedup();
        // A package named with its subpackages (`pkg`, `pkg.sub`) is measured once, whole.
        let tops: Vec<String> = paths
            .iter()
            .filter(|p| {
                !paths
                    .iter()
                    .any(|q| q != *p && p.starts_with(&format!("{q}/")))
            })
            .cloned()
            .collect();
        if !tops.is_empty() {
            return tops;
        }
    }
    Vec::new()
}

/// A dotted import name as a path in the tree, looked up in `roots` (then the root and `src`).
fn module_path(tree: &ProjectTree, dotted: &str, roots: &[String]) -> Option<String> {
    let rel = dotted.trim().replace('.', "/");
    if rel.is_empty() {
        return None;
    }
    let mut all: Vec<String> = roots.to_vec();
    all.extend(["".to_string(), "src".to_string()]);
    all.iter().find_map(|root| {
        let base = if root.is_empty() || root == "." {
            rel.clone()
        } else {
            format!("{}/{rel}", root.trim_end_matches('/'))
        };
        let file = format!("{base}.py");
        if tree.is_dir(&base) {
            Some(base)
        } else if tree.has_file(&file) {
            Some(file)
        } else {
            None
        }
    })
}

/// `[tool.coverage.run] source` (and `source_pkgs`), or the `[run]` / `[coverage:run]` section of
/// `.coveragerc`, setup.cfg or tox.ini: what the project itself measures.
fn coverage_source(tree: &ProjectTree) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    if let Some(run) = tree
        .pyproject()
        .and_then(|t| t.get("tool")?.get("coverage")?.get("run").cloned())
    {
        for key in ["source", "source_pkgs"] {
            entries.extend(strings(run.get(key)));
        }
    }
    for (file, section) in [
        (".coveragerc", "run"),
        ("setup.cfg", "coverage:run"),
        ("tox.ini", "coverage:run"),
    ] {
        if let Some(text) = tree.text(file) {
            let cfg = ini::parse(text);
            for key in ["source", "source_pkgs"] {
                entries.extend(cfg.list(section, key));
            }
        }
    }
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.trim().trim_start_matches("./").trim_end_matches('/');
        if entry.is_empty() || entry == "." {
            continue;
        }
        if tree.is_dir(entry) && !is_package_dir(tree, entry) && !is_namespace(tree, entry) {
            // A folder of packages (`source = ["src"]`): what it holds.
            out.extend(walk(tree, entry));
        } else if tree.is_dir(entry) || tree.has_file(entry) {
            out.push(entry.to_string());
        } else if let Some(p) = module_path(tree, entry, &[]) {
            out.push(p);
        }
    }
    out
}

/// setuptools: `[tool.setuptools]` in pyproject.toml, `[options]` in setup.cfg, or the literal
/// lists of a setup.py; `find:` searches the tree with the declared `where`/include/exclude.
fn setuptools_packages(tree: &ProjectTree, project: Option<&str>) -> Vec<String> {
    setuptools_finder(tree).resolve(tree, project)
}

/// What setuptools' configuration says, unresolved.
fn setuptools_finder(tree: &ProjectTree) -> Finder {
    let mut spec = Finder::default();
    if let Some(st) = tree
        .pyproject()
        .and_then(|t| t.get("tool")?.get("setuptools").cloned())
    {
        if let Some(dir) = st
            .get("package-dir")
            .and_then(|d| d.get(""))
            .and_then(|v| v.as_str())
        {
            spec.roots.push(dir.to_string());
        }
        match st.get("packages") {
            Some(toml::Value::Array(_)) => spec.names.extend(strings(st.get("packages"))),
            Some(toml::Value::Table(t)) => spec.find(t.get("find")),
            _ => {}
        }
        if let Some(find) = st.get("packages").and_then(|p| p.get("find")) {
            spec.find(Some(find));
        }
        spec.names.extend(strings(st.get("py-modules")));
    }
    if let Some(text) = tree.text("setup.cfg") {
        let cfg = ini::parse(text);
        if let Some(dir) = cfg.get("options", "package_dir") {
            for line in dir.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && k.trim().is_empty()
                {
                    spec.roots.push(v.trim().to_string());
                }
            }
        }
        match cfg.get("options", "packages").map(str::trim) {
            Some(v) if v.starts_with("find") => {
                spec.searched = true;
                spec.roots
                    .extend(cfg.list("options.packages.find", "where"));
                spec.include
                    .extend(cfg.list("options.packages.find", "include"));
                spec.exclude
                    .extend(cfg.list("options.packages.find", "exclude"));
            }
            Some(_) => spec.names.extend(cfg.list("options", "packages")),
            None => {}
        }
        spec.names.extend(cfg.list("options", "py_modules"));
    }
    if let Some(text) = tree.text("setup.py") {
        spec.names.extend(setup_py_list(text, "packages"));
        spec.names.extend(setup_py_list(text, "py_modules"));
        if let Some(dir) = setup_py_package_dir(text) {
            spec.roots.push(dir);
        }
    }
    spec
}

#[derive(Default)]
struct Finder {
    names: Vec<String>,
    roots: Vec<String>,
    searched: bool,
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Finder {
    fn find(&mut self, find: Option<&toml::Value>) {
        let Some(find) = find else { return };
        self.searched = true;
        self.roots.extend(strings(find.get("where")));
        self.include.extend(strings(find.get("include")));
        self.exclude.extend(strings(find.get("exclude")));
    }

    fn resolve(&self, tree: &ProjectTree, project: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .filter_map(|n| module_path(tree, n, &self.roots))
            .collect();
        if self.searched {
            let roots = if self.roots.is_empty() {
                vec![String::new()]
            } else {
                self.roots.clone()
            };
            for root in roots {
                let root = clean_dir(&root);
                for path in walk(tree, &root) {
                    // Named from the folder searched, as setuptools names what it finds.
                    let rel = path
                        .strip_prefix(&root)
                        .map_or(path.as_str(), |r| r.trim_start_matches('/'));
                    let dotted = dotted(rel);
                    let included = self.include.is_empty()
                        || self.include.iter().any(|p| glob_match(p, &dotted));
                    let excluded = self.exclude.iter().any(|p| {
                        glob_match(p, &dotted)
                            || glob_match(p, dotted.split('.').next().unwrap_or(""))
                    });
                    if included && !excluded && !is_test_helper(&path, project, &self.roots) {
                        out.push(path);
                    }
                }
            }
        }
        out
    }
}

/// The string literals of `name=[...]` in a setup.py (a literal list only; anything computed
/// is left to the tree).
fn setup_py_list(text: &str, name: &str) -> Vec<String> {
    let Some(start) = find_keyword(text, name) else {
        return Vec::new();
    };
    let rest = text[start..].trim_start();
    let Some(rest) = rest.strip_prefix('[') else {
        return Vec::new();
    };
    let Some(end) = rest.find(']') else {
        return Vec::new();
    };
    rest[..end]
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .collect()
}

/// Where `name=` starts its value in a setup.py call, if it does.
fn find_keyword(text: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(name) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].trim_start();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && after.starts_with('=')
            && !after.starts_with("==")
        {
            let eq = text[at + name.len()..].find('=')? + at + name.len();
            return Some(eq + 1);
        }
        from = at + name.len();
    }
    None
}

/// `package_dir={"": "src"}` in a setup.py.
fn setup_py_package_dir(text: &str) -> Option<String> {
    let start = find_keyword(text, "package_dir")?;
    let rest = text[start..].trim_start().strip_prefix('{')?;
    let body = &rest[..rest.find('}')?];
    let (key, value) = body.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    key.is_empty().then(|| {
        value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string()
    })
}

/// hatch, flit, poetry and pdm: the build backend's own package settings.
fn backend_packages(tree: &ProjectTree, project: Option<&str>) -> Vec<String> {
    let Some(toml) = tree.pyproject() else {
        return Vec::new();
    };
    let tool = toml.get("tool");
    let at =
        |keys: &[&str]| -> Option<&toml::Value> { keys.iter().try_fold(tool?, |v, k| v.get(*k)) };
    let mut out = Vec::new();
    // hatch: paths.
    for keys in [
        &["hatch", "build", "targets", "wheel", "packages"][..],
        &["hatch", "build", "packages"],
        &["hatch", "build", "targets", "wheel", "only-include"],
        &["pdm", "build", "includes"],
    ] {
        out.extend(
            strings(at(keys))
                .into_iter()
                .map(|p| p.trim_matches('/').to_string()),
        );
    }
    // flit: an import name, by default the project's name.
    let flit = at(&["flit", "module", "name"])
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let uses_flit = toml
        .get("build-system")
        .and_then(|b| b.get("build-backend"))
        .and_then(|b| b.as_str())
        .is_some_and(|b| b.starts_with("flit"));
    if let Some(name) = flit.or_else(|| uses_flit.then(|| project.map(normalize)).flatten()) {
        out.extend(module_path(tree, &name, &[]));
    }
    // poetry: [{include = "pkg", from = "src"}].
    if let Some(toml::Value::Array(list)) = at(&["poetry", "packages"]) {
        for p in list {
            let Some(include) = p.get("include").and_then(|v| v.as_str()) else {
                continue;
            };
            let from = p.get("from").and_then(|v| v.as_str()).unwrap_or("");
            let path = if from.is_empty() {
                include.to_string()
            } else {
                format!("{}/{include}", from.trim_matches('/'))
            };
            out.push(path.trim_end_matches(".py").to_string());
            out.push(path);
        }
    }
    out
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    match value {
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn is_package_dir(tree: &ProjectTree, dir: &str) -> bool {
    tree.has_file(&format!("{dir}/__init__.py"))
}

/// A folder without `__init__.py` and without modules of its own whose sub-folders are
/// packages: a PEP 420 namespace (`jaraco/` holding `jaraco/functools/`). `src` and `lib` are
/// source roots, not namespaces.
fn is_namespace(tree: &ProjectTree, dir: &str) -> bool {
    let children = tree.children(dir);
    !SOURCE_ROOTS.contains(&dir)
        && !is_package_dir(tree, dir)
        && !children
            .iter()
            .any(|(name, is_dir)| !is_dir && name.ends_with(".py"))
        && children
            .iter()
            .any(|(name, is_dir)| *is_dir && is_package_dir(tree, &format!("{dir}/{name}")))
}

/// The code directly in `root` ("" for the repository's root): packages, the packages inside
/// namespace folders, and single modules, without the project's tooling and tests.
fn walk(tree: &ProjectTree, root: &str) -> Vec<String> {
    let join = |name: &str| {
        if root.is_empty() {
            name.to_string()
        } else {
            format!("{root}/{name}")
        }
    };
    let mut out = Vec::new();
    for (name, is_dir) in tree.children(root) {
        if is_dir {
            if !is_identifier(&name) || NOT_CODE_DIRS.contains(&name.as_str()) {
                continue;
            }
            let path = join(&name);
            if is_package_dir(tree, &path) {
                out.push(path);
            } else if is_namespace(tree, &path) {
                for (sub, sub_dir) in tree.children(&path) {
                    let p = format!("{path}/{sub}");
                    if sub_dir && is_identifier(&sub) && is_package_dir(tree, &p) {
                        out.push(p);
                    }
                }
            }
        } else if let Some(stem) = name.strip_suffix(".py")
            && is_identifier(stem)
            && !NOT_CODE_MODULES.contains(&stem)
            && !is_test_module_name(stem)
        {
            out.push(join(&name));
        }
    }
    out
}

/// A tests folder or test module, by its name (`tests`, `test.py`, `test_x.py`, `x_test.py`).
fn is_tests_path(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    let stem = last.strip_suffix(".py").unwrap_or(last);
    TEST_DIR_NAMES.contains(&stem) || is_test_module_name(stem) || stem == "conftest"
}

/// A package of tests under a name of its own (vine's `t/`, holding `t/unit/test_*.py`): it
/// has test modules outside any `tests` folder, and every other module in it is a conftest, an
/// `__init__` or in a `tests` folder. A package named like the project is its code whatever it
/// holds.
fn is_tests_package(tree: &ProjectTree, dir: &str, project: Option<&str>) -> bool {
    let last = dir.rsplit('/').next().unwrap_or(dir);
    if dir.ends_with(".py") || project.is_some_and(|p| normalize(p) == normalize(last)) {
        return false;
    }
    let prefix = format!("{dir}/");
    let mut tests = false;
    for f in tree.files.range(prefix.clone()..) {
        let Some(rest) = f.strip_prefix(&prefix) else {
            break;
        };
        let Some(rest) = rest.strip_suffix(".py") else {
            continue;
        };
        let (folders, stem) = rest.rsplit_once('/').unwrap_or(("", rest));
        if folders.split('/').any(|d| TEST_DIR_NAMES.contains(&d)) {
            continue;
        }
        if is_test_module_name(stem) {
            tests = true;
        } else if stem != "__init__" && stem != "conftest" {
            return false;
        }
    }
    tests
}

/// Code Python can import and run: a module or a folder named like an identifier, holding at
/// least one `.py` file (not only `.pyi` stubs).
fn is_python_code(tree: &ProjectTree, path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or(path);
    if let Some(stem) = last.strip_suffix(".py") {
        return is_identifier(stem);
    }
    let prefix = format!("{path}/");
    is_identifier(last)
        && tree
            .files
            .range(prefix.clone()..)
            .take_while(|f| f.starts_with(&prefix))
            .any(|f| f.ends_with(".py"))
}

fn is_test_module_name(stem: &str) -> bool {
    stem == "tests" || stem == "test" || stem.starts_with("test_") || stem.ends_with("_test")
}

/// A package for the tests only (`testers/`, `testing/`, `test_utils/`): never a target, unless
/// it is the project itself (a pytest plugin, say).
fn is_test_helper(path: &str, project: Option<&str>, roots: &[String]) -> bool {
    let name = import_name(path, roots);
    let top = name
        .rsplit('.')
        .next()
        .unwrap_or(&name)
        .to_ascii_lowercase();
    top.contains("test") && project.is_none_or(|p| normalize(p) != normalize(&name))
}

/// The project's code as the tree shows it: under the source roots the packaging metadata
/// declares, else `src/` (or `lib/`), when one holds any, else at the root.
fn from_tree(tree: &ProjectTree, project: Option<&str>, declared: &[String]) -> Vec<String> {
    let roots = declared
        .iter()
        .map(String::as_str)
        .chain(SOURCE_ROOTS.iter().copied())
        .filter(|r| tree.is_dir(r) && !is_package_dir(tree, r))
        .chain(std::iter::once(""));
    for root in roots {
        let found: Vec<String> = walk(tree, root)
            .into_iter()
            .filter(|p| {
                !is_test_helper(p, project, declared) && !is_tests_package(tree, p, project)
            })
            .collect();
        // Beside packages, a loose module is mostly a script (`release.py`, `docs_build.py`)
        // that may run on import: it counts only when named like the project.
        let has_package = found.iter().any(|p| !p.ends_with(".py"));
        let found: Vec<String> = found
            .into_iter()
            .filter(|p| {
                !has_package
                    || !p.ends_with(".py")
                    || project.is_some_and(|n| normalize(n) == normalize(&import_name(p, declared)))
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// Coverage `--omit` patterns for the tests that live inside the packages (`toolz/tests/`,
/// `pkg/test_core.py`, conftest files): they are not code under test.
pub fn tests_inside(tree: &ProjectTree, packages: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for pkg in packages.iter().filter(|p| !p.ends_with(".py")) {
        let prefix = format!("{pkg}/");
        let mut dirs = BTreeSet::new();
        let (mut modules, mut conftest) = (false, false);
        for f in tree.files.range(prefix.clone()..) {
            let Some(rest) = f.strip_prefix(&prefix) else {
                break;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            if let Some(k) = parts[..parts.len() - 1]
                .iter()
                .position(|d| TEST_DIR_NAMES.contains(d))
            {
                dirs.insert(format!("{prefix}{}", parts[..=k].join("/")));
                continue;
            }
            let name = parts[parts.len() - 1];
            let stem = name.strip_suffix(".py").unwrap_or("");
            conftest |= name == "conftest.py";
            modules |= is_test_module_name(stem) && stem != "test" && stem != "tests";
        }
        out.extend(dirs.into_iter().map(|d| format!("{d}/*")));
        if modules {
            out.extend([
                format!("{pkg}/test_*.py"),
                format!("{pkg}/*/test_*.py"),
                format!("{pkg}/*_test.py"),
                format!("{pkg}/*/*_test.py"),
            ]);
        }
        if conftest {
            out.extend([format!("{pkg}/conftest.py"), format!("{pkg}/*/conftest.py")]);
        }
    }
    out
}

/// Folder names that hold tests wherever they are, inside a package too.
pub const TEST_DIR_NAMES: &[&str] = &["tests", "test", "testing"];

/// Python's `fnmatch`: `*` matches anything (`/` too), `?` one character, `[seq]` a class.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Dynamic programming over (pattern position, text position): no exponential backtracking.
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '*' => {
                let mut on = false;
                for j in 0..=t.len() {
                    on |= reach[j];
                    next[j] = on;
                }
                i += 1;
            }
            '[' if p[i + 1..].contains(&']') => {
                let close = i + 1 + p[i + 1..].iter().position(|c| *c == ']').unwrap_or(0);
                let (negate, set) = match p.get(i + 1) {
                    Some('!') => (true, &p[i + 2..close]),
                    _ => (false, &p[i + 1..close]),
                };
                for j in 0..t.len() {
                    if reach[j] && class_has(set, t[j]) != negate {
                        next[j + 1] = true;
                    }
                }
                i = close + 1;
            }
            c => {
                for j in 0..t.len() {
                    if reach[j] && (c == '?' || c == t[j]) {
                        next[j + 1] = true;
                    }
                }
                i += 1;
            }
        }
        reach = next;
    }
    reach[t.len()]
}

fn class_has(set: &[char], c: char) -> bool {
    let mut k = 0;
    while k < set.len() {
        if k + 2 < set.len() && set[k + 1] == '-' {
            if set[k] <= c && c <= set[k + 2] {
                return true;
            }
            k += 3;
        } else {
            if set[k] == c {
                return true;
            }
            k += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str], configs: &[(&str, &str)]) -> ProjectTree {
        let texts: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut all: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        all.extend(texts.keys().cloned());
        ProjectTree::new(all, |name| texts.get(name).cloned())
    }

    fn detect(files: &[&str], configs: &[(&str, &str)]) -> Vec<String> {
        detect_packages(&tree(files, configs)).unwrap()
    }

    #[test]
    fn two_packages_side_by_side_under_src() {
        let got = detect(
            &[
                "src/attr/__init__.py",
                "src/attrs/__init__.py",
                "tests/test_a.py",
                "conftest.py",
            ],
            &[],
        );
        assert_eq!(got, ["src/attr", "src/attrs"]);
    }

    #[test]
    fn single_module_and_root_tests() {
        let got = detect(
            &[
                "six.py",
                "test_six.py",
                "setup.py",
                "conftest.py",
                "documentation/conf.py",
            ],
            &[],
        );
        assert_eq!(got, ["six.py"]);
    }

    #[test]
    fn scripts_beside_a_package_are_not_code_under_test() {
        let got = detect(&["pkg/__init__.py", "release.py", "tests/test_x.py"], &[]);
        assert_eq!(got, ["pkg"]);
        let got = detect(
            &["pkg/__init__.py", "extra.py"],
            &[("pyproject.toml", "[project]\nname = \"extra\"\n")],
        );
        assert_eq!(got, ["extra.py", "pkg"]);
    }

    #[test]
    fn namespace_package() {
        let got = detect(
            &[
                "jaraco/functools/__init__.py",
                "jaraco/functools/py.typed",
                "tests/test_x.py",
                "docs/conf.py",
            ],
            &[],
        );
        assert_eq!(got, ["jaraco/functools"]);
        assert_eq!(
            import_name("jaraco/functools/__init__.py", &[]),
            "jaraco.functools"
        );
        assert_eq!(import_root("jaraco/functools", &[]), "");
    }

    #[test]
    fn test_helper_package_is_left_out() {
        let got = detect(
            &[
                "pymonet/__init__.py",
                "pymonet/box.py",
                "testers/__init__.py",
                "tests/test_box.py",
            ],
            &[],
        );
        assert_eq!(got, ["pymonet"]);
    }

    #[test]
    fn a_tests_package_under_a_name_of_its_own_is_not_code() {
        // vine: `t/` is a package of tests only.
        let got = detect(
            &[
                "vine/__init__.py",
                "vine/promises.py",
                "t/__init__.py",
                "t/unit/__init__.py",
                "t/unit/test_promises.py",
                "setup.py",
            ],
            &[],
        );
        assert_eq!(got, ["vine"]);
        // A package with its tests inside stays.
        let got = detect(
            &[
                "toolz/__init__.py",
                "toolz/tests/test_a.py",
                "toolz/itertoolz.py",
            ],
            &[],
        );
        assert_eq!(got, ["toolz"]);
        // Its code all in `__init__.py`, its tests in a tests folder.
        let got = detect(&["one/__init__.py", "one/tests/test_a.py"], &[]);
        assert_eq!(got, ["one"]);
    }

    #[test]
    fn a_stub_package_is_not_code() {
        // wrapt lists its PEP 561 stubs as a package.
        let pyproject = "[tool.setuptools]\npackage-dir = {\"\" = \"src\"}\npackages = [\"wrapt\", \"wrapt-stubs\"]\n";
        let got = detect(
            &[
                "src/wrapt/__init__.py",
                "src/wrapt/wrappers.py",
                "src/wrapt-stubs/__init__.pyi",
            ],
            &[("pyproject.toml", pyproject)],
        );
        assert_eq!(got, ["src/wrapt"]);
        let got = detect(
            &["pkg/__init__.py", "pkg_stubs/__init__.pyi"],
            &[(
                "pyproject.toml",
                "[tool.setuptools]\npackages = [\"pkg\", \"pkg_stubs\"]\n",
            )],
        );
        assert_eq!(got, ["pkg"]);
    }

    #[test]
    fn a_pytest_plugin_named_like_the_project_stays() {
        let got = detect(
            &["pytest_thing/__init__.py", "tests/test_x.py"],
            &[("pyproject.toml", "[project]\nname = \"pytest-thing\"\n")],
        );
        assert_eq!(got, ["pytest_thing"]);
    }

    #[test]
    fn coverage_source_wins() {
        let got = detect(
            &[
                "toolz/__init__.py",
                "tlz/__init__.py",
                "bench/x.py",
                "extra/__init__.py",
            ],
            &[(
                "pyproject.toml",
                "[tool.coverage.run]\nsource = [\"toolz\", \"tlz\"]\n",
            )],
        );
        assert_eq!(got, ["tlz", "toolz"]);
    }

    #[test]
    fn a_coverage_source_that_measures_the_tests_too_names_only_the_code() {
        let got = detect(
            &["slugify/__init__.py", "test.py"],
            &[(
                "pyproject.toml",
                "[tool.coverage.run]\nsource = [\"slugify\", \"test\"]\n",
            )],
        );
        assert_eq!(got, ["slugify"]);
    }

    #[test]
    fn coverage_source_naming_a_folder_of_packages() {
        let got = detect(
            &["src/a/__init__.py", "src/b/__init__.py", "tests/t.py"],
            &[(".coveragerc", "[run]\nsource =\n    src\nbranch = True\n")],
        );
        assert_eq!(got, ["src/a", "src/b"]);
    }

    #[test]
    fn setuptools_declarations() {
        let files = [
            "lib/one/__init__.py",
            "lib/one/sub/__init__.py",
            "lib/two.py",
            "other/__init__.py",
        ];
        let pyproject = "[tool.setuptools]\npackage-dir = {\"\" = \"lib\"}\npackages = [\"one\", \"one.sub\"]\npy-modules = [\"two\"]\n";
        assert_eq!(
            detect(&files, &[("pyproject.toml", pyproject)]),
            ["lib/one", "lib/two.py"]
        );
        let cfg = "[options]\npackage_dir =\n    =lib\npackages = find:\n\n[options.packages.find]\nwhere = lib\nexclude =\n    one.sub\n";
        assert_eq!(
            detect(&files, &[("setup.cfg", cfg)]),
            ["lib/one", "lib/two.py"]
        );
        let setup_py = "from setuptools import setup\nsetup(name='x', packages=['other'], python_requires='>=3')\n";
        assert_eq!(detect(&files, &[("setup.py", setup_py)]), ["other"]);
    }

    #[test]
    fn backends_declare_paths_and_names() {
        let files = [
            "src/humanize/__init__.py",
            "src/humanize/time.py",
            "scripts/x.py",
        ];
        let hatch = "[tool.hatch.build.targets.wheel]\npackages = [\"src/humanize\"]\n";
        assert_eq!(
            detect(&files, &[("pyproject.toml", hatch)]),
            ["src/humanize"]
        );
        let flit = "[build-system]\nbuild-backend = \"flit_core.buildapi\"\n[project]\nname = \"humanize\"\n";
        assert_eq!(
            detect(&files, &[("pyproject.toml", flit)]),
            ["src/humanize"]
        );
        let poetry =
            "[tool.poetry]\nname = \"h\"\npackages = [{include = \"humanize\", from = \"src\"}]\n";
        assert_eq!(
            detect(&files, &[("pyproject.toml", poetry)]),
            ["src/humanize"]
        );
    }

    #[test]
    fn declarations_naming_nothing_that_exists_fall_back_to_the_tree() {
        let got = detect(
            &["pkg/__init__.py"],
            &[(
                "pyproject.toml",
                "[tool.setuptools]\npackages = [\"gone\"]\n",
            )],
        );
        assert_eq!(got, ["pkg"]);
    }

    #[test]
    fn nothing_to_test_says_what_to_pass() {
        let err =
            detect_packages(&tree(&["README.md", "tests/test_x.py", "setup.py"], &[])).unwrap_err();
        assert!(err.contains("--package"), "{err}");
    }

    #[test]
    fn tests_inside_packages_are_omitted_from_coverage() {
        let t = tree(
            &[
                "toolz/__init__.py",
                "toolz/tests/test_a.py",
                "toolz/sandbox/tests/test_b.py",
                "pkg/core.py",
                "pkg/test_core.py",
                "plain/a.py",
                "six.py",
            ],
            &[],
        );
        let got = tests_inside(
            &t,
            &[
                "toolz".into(),
                "pkg".into(),
                "plain".into(),
                "six.py".into(),
            ],
        );
        assert_eq!(
            got,
            [
                "toolz/sandbox/tests/*",
                "toolz/tests/*",
                "pkg/test_*.py",
                "pkg/*/test_*.py",
                "pkg/*_test.py",
                "pkg/*/*_test.py"
            ]
        );
    }

    #[test]
    fn import_names() {
        assert_eq!(import_name("pkg/a.py", &[]), "pkg.a");
        assert_eq!(import_name("src/pkg/sub/b.py", &[]), "pkg.sub.b");
        assert_eq!(import_name("pkg/__init__.py", &[]), "pkg");
        assert_eq!(import_name("six.py", &[]), "six");
        assert_eq!(import_root("src/pkg", &[]), "src");
        assert_eq!(import_root("six.py", &[]), "");
        // A declared root; the deepest one holding the path wins; a name that only starts
        // like a root is not in it.
        let roots = ["code".to_string(), "src/python".to_string()];
        assert_eq!(import_name("code/png.py", &roots), "png");
        assert_eq!(import_root("code/png.py", &roots), "code");
        assert_eq!(import_name("src/python/pkg/__init__.py", &roots), "pkg");
        assert_eq!(import_name("src/other/a.py", &roots), "other.a");
        assert_eq!(import_name("codec/x.py", &roots), "codec.x");
        assert_eq!(import_name("code/png.py", &[]), "code.png");
    }

    #[test]
    fn source_roots_come_from_the_packaging_metadata() {
        // pypng: setup.cfg `package_dir = =code`, one module, its tests beside it.
        let files = [
            "code/png.py",
            "code/test_png.py",
            "code/pngsuite.py",
            "code/prichunkpng",
            "man/x.rst",
        ];
        let cfg =
            "[metadata]\nname = pypng\n\n[options]\npackage_dir =\n\t= code\npy_modules =\n\tpng\n";
        let t = tree(&files, &[("setup.cfg", cfg)]);
        assert_eq!(source_roots(&t), ["code"]);
        assert_eq!(detect_packages(&t).unwrap(), ["code/png.py"]);
        let roots = source_roots(&t);
        assert_eq!(import_name("code/png.py", &roots), "png");

        let lib = ["Lib/fontMath/__init__.py", "Lib/fontMath/mathGlyph.py"];
        let setup_py =
            "setup(\n    package_dir={\"\": \"Lib\"},\n    packages=find_packages(\"Lib\"),\n)\n";
        let t = tree(&lib, &[("setup.py", setup_py)]);
        assert_eq!(source_roots(&t), ["Lib"]);
        assert_eq!(detect_packages(&t).unwrap(), ["Lib/fontMath"]);

        let py = ["python/pkg/__init__.py", "python/pkg/a.py"];
        let pyproject = "[tool.setuptools.packages.find]\nwhere = [\"python\"]\n[tool.setuptools]\npackage-dir = {\"\" = \"./python/\"}\n";
        let t = tree(&py, &[("pyproject.toml", pyproject)]);
        assert_eq!(source_roots(&t), ["python"]);
        assert_eq!(detect_packages(&t).unwrap(), ["python/pkg"]);
        let poetry =
            "[tool.poetry]\nname = \"p\"\npackages = [{include = \"pkg\", from = \"python\"}]\n";
        assert_eq!(
            source_roots(&tree(&py, &[("pyproject.toml", poetry)])),
            ["python"]
        );
        let hatch = "[tool.hatch.build.targets.wheel]\npackages = [\"python/pkg\"]\n";
        assert_eq!(
            source_roots(&tree(&py, &[("pyproject.toml", hatch)])),
            ["python"]
        );
        // A folder the tree does not have, and the root itself, are no source roots.
        let cfg = "[options]\npackage_dir =\n    =gone\npackages = find:\n[options.packages.find]\nwhere = .\n";
        assert!(source_roots(&tree(&py, &[("setup.cfg", cfg)])).is_empty());
        // Without metadata, the tree decides: `code/` is then a folder like any other.
        assert!(source_roots(&tree(&files, &[])).is_empty());
    }

    #[test]
    fn fnmatch_semantics() {
        assert!(glob_match("test_*.py", "test_a.py"));
        assert!(!glob_match("test_*.py", "a_test.py"));
        assert!(glob_match("*_test.py", "a_test.py"));
        assert!(glob_match("t?st.py", "test.py"));
        assert!(glob_match("[tc]est.py", "cest.py"));
        assert!(!glob_match("[!tc]est.py", "test.py"));
        assert!(glob_match("*", ""));
        assert!(glob_match("tests/*", "tests/a/b.py"));
    }
}
