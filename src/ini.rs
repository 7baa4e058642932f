//! The INI files of the Python world (setup.cfg, tox.ini, .coveragerc) as Python's
//! `configparser` reads them: `[section]`, `key = value` or `key: value`, values continued on
//! indented lines, comments on lines of their own. Only what detection needs.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

pub fn parse(text: &str) -> Ini {
    let mut ini = Ini::default();
    let mut section: Option<String> = None;
    let mut key: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if indented && let (Some(s), Some(k)) = (&section, &key) {
            if let Some(value) = ini.sections.get_mut(s).and_then(|m| m.get_mut(k)) {
                value.push('\n');
                value.push_str(trimmed);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            ini.sections.entry(name.clone()).or_default();
            section = Some(name);
            key = None;
            continue;
        }
        let Some(s) = &section else { continue };
        let split = trimmed.find(['=', ':']);
        if let Some(i) = split {
            let k = trimmed[..i].trim().to_ascii_lowercase();
            let v = trimmed[i + 1..].trim().to_string();
            ini.sections
                .entry(s.clone())
                .or_default()
                .insert(k.clone(), v);
            key = Some(k);
        }
    }
    ini
}

impl Ini {
    pub fn has_section(&self, section: &str) -> bool {
        self.sections.contains_key(section)
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(String::as_str)
    }

    /// A value as a list: one item per line or per comma, blanks dropped.
    pub fn list(&self, section: &str, key: &str) -> Vec<String> {
        self.get(section, key)
            .map(|v| {
                v.split(['\n', ','])
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_and_continued_values() {
        let ini = parse(
            "# comment\n[metadata]\nname = six\n\n[options]\npackages =\n    a\n    b, c\npy_modules: six\n[tool:pytest]\ntestpaths = tests\n",
        );
        assert_eq!(ini.get("metadata", "name"), Some("six"));
        assert_eq!(ini.list("options", "packages"), ["a", "b", "c"]);
        assert_eq!(ini.get("options", "py_modules"), Some("six"));
        assert_eq!(ini.list("tool:pytest", "testpaths"), ["tests"]);
        assert!(ini.get("nowhere", "name").is_none());
    }
}
