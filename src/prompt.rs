//! The handlebars templates: embedded in the binary, each overridable by a file of the same name
//! in the state dir (so a team can tune prompts or the report without rebuilding).

use std::path::Path;

use handlebars::Handlebars;
use serde::Serialize;

pub const SYSTEM: &str = "system.hbs";
pub const ADD: &str = "add.hbs";
pub const REPORT: &str = "report.md.hbs";
pub const REPAIR: &str = "repair.hbs";
pub const FIX: &str = "fix.hbs";

const EMBEDDED: &[(&str, &str)] = &[
    (SYSTEM, include_str!("../prompts/system.hbs")),
    (ADD, include_str!("../prompts/add.hbs")),
    (REPORT, include_str!("../prompts/report.md.hbs")),
    (REPAIR, include_str!("../prompts/repair.hbs")),
    (FIX, include_str!("../prompts/fix.hbs")),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template {name} ({origin}) is not valid handlebars: {detail}")]
    Invalid {
        name: String,
        origin: String,
        detail: String,
    },
    #[error("cannot render the template {name}: {detail}")]
    Render { name: String, detail: String },
}

pub struct Templates {
    registry: Handlebars<'static>,
}

impl Templates {
    /// Registers every embedded template, replaced by `<override_dir>/<name>` where that exists.
    pub fn load(override_dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(false);
        // Prompts and Markdown are not HTML: escaping `<` would corrupt code.
        registry.register_escape_fn(handlebars::no_escape);
        for (name, text) in EMBEDDED {
            let user_file = override_dir.map(|d| d.join(name)).filter(|p| p.is_file());
            let (source, origin) = match &user_file {
                Some(path) => (
                    std::fs::read_to_string(path).map_err(|e| TemplateError::Invalid {
                        name: name.to_string(),
                        origin: path.display().to_string(),
                        detail: e.to_string(),
                    })?,
                    path.display().to_string(),
                ),
                None => (text.to_string(), "built in".to_string()),
            };
            registry
                .register_template_string(name, source)
                .map_err(|e| TemplateError::Invalid {
                    name: name.to_string(),
                    origin,
                    detail: e.to_string(),
                })?;
        }
        Ok(Templates { registry })
    }

    pub fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<String, TemplateError> {
        self.registry
            .render(name, data)
            .map_err(|e| TemplateError::Render {
                name: name.to_string(),
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_template_renders() {
        let t = Templates::load(None).unwrap();
        let data = serde_json::json!({"module_path": "pkg/a.py", "source": "x = '<b>'", "focus": "edge cases"});
        for (name, _) in EMBEDDED {
            t.render(name, &data).unwrap();
        }
        let add = t.render(ADD, &data).unwrap();
        assert!(add.contains("x = '<b>'"), "code must not be HTML-escaped");
        assert!(add.contains("edge cases"));
    }

    #[test]
    fn a_file_in_the_override_dir_wins() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(SYSTEM), "custom {{focus}}").unwrap();
        let t = Templates::load(Some(tmp.path())).unwrap();
        assert_eq!(
            t.render(SYSTEM, &serde_json::json!({"focus": "x"}))
                .unwrap(),
            "custom x"
        );
    }

    #[test]
    fn a_broken_override_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(REPORT), "{{#if}").unwrap();
        let err = Templates::load(Some(tmp.path())).err().unwrap().to_string();
        assert!(err.contains("report.md.hbs"), "{err}");
    }
}
