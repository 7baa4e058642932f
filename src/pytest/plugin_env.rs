//! The environment variables improve sets for its pytest plugin, named once on this side;
//! `python/improve_plugin.py` names them once on its side (its `ENV_*` constants), and a test
//! here checks that the two blocks agree.

/// A folder for the bytecode of everything imported after the plugin.
pub const BYTECODE_CACHE: &str = "IMPROVE_BYTECODE_CACHE";
/// Where to write each test's coverage gain.
pub const GAIN_OUT: &str = "IMPROVE_GAIN_OUT";
/// The coverage report the gain is measured against (the run branch's tip).
pub const GAIN_BEFORE: &str = "IMPROVE_GAIN_BEFORE";
/// Where to write coverage's JSON report in-process.
pub const COVERAGE_JSON: &str = "IMPROVE_COVERAGE_JSON";
/// The mutants to run the tests against (JSON, made by the helper).
pub const MUTANTS: &str = "IMPROVE_MUTANTS";
/// Where to append what became of each mutant (JSON lines).
pub const MUTANTS_OUT: &str = "IMPROVE_MUTANTS_OUT";
/// Where to write what pytest's configuration and collection say of the project.
pub const PROJECT_OUT: &str = "IMPROVE_PROJECT_OUT";
/// Import names (comma-separated) to report where they are imported from.
pub const IMPORT_CHECK: &str = "IMPROVE_IMPORT_CHECK";

/// Where to write the tests after which coverage stopped measuring as before.
pub const STOPPERS_OUT: &str = "IMPROVE_STOPPERS_OUT";

/// Every variable, by the name both sides give it (`ENV_<name>` in the plugin).
pub const ALL: [(&str, &str); 9] = [
    ("BYTECODE_CACHE", BYTECODE_CACHE),
    ("GAIN_OUT", GAIN_OUT),
    ("GAIN_BEFORE", GAIN_BEFORE),
    ("COVERAGE_JSON", COVERAGE_JSON),
    ("MUTANTS", MUTANTS),
    ("MUTANTS_OUT", MUTANTS_OUT),
    ("PROJECT_OUT", PROJECT_OUT),
    ("IMPORT_CHECK", IMPORT_CHECK),
    ("STOPPERS_OUT", STOPPERS_OUT),
];

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN: &str = include_str!("../../python/improve_plugin.py");

    /// The plugin's `ENV_X = "IMPROVE_..."` lines, as (X, value).
    fn python_block() -> Vec<(String, String)> {
        PLUGIN
            .lines()
            .filter_map(|line| {
                let (name, value) = line.strip_prefix("ENV_")?.split_once(" = ")?;
                let value = value.strip_prefix('"')?.strip_suffix('"')?;
                Some((name.to_string(), value.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_plugin_names_the_same_variables() {
        let rust: Vec<(String, String)> = ALL
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut python = python_block();
        let mut sorted_rust = rust.clone();
        python.sort();
        sorted_rust.sort();
        assert_eq!(
            sorted_rust, python,
            "src/pytest/plugin_env.rs vs improve_plugin.py"
        );
        for (name, value) in &rust {
            assert_eq!(value, &format!("IMPROVE_{name}"));
        }
    }

    #[test]
    fn the_plugin_spells_no_variable_outside_its_block() {
        let quoted = PLUGIN.matches("\"IMPROVE_").count();
        assert_eq!(
            quoted,
            ALL.len(),
            "a quoted IMPROVE_ name outside the ENV_ block"
        );
    }
}
