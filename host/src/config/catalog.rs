//! Plugins and models by name: a policy that says `plugin: risk-cpu` or `model: lstm` means
//! the same wherever it lives (a file in any folder, an AugurPolicy in any namespace). Names
//! are looked up in a search path, as a shell looks up commands: the folders given with
//! `--plugin-dir` / `--model-dir` first, then the shipped sets. A value with a `/` or a `.`
//! stays a path, relative to the policy file.

use std::path::{Path, PathBuf};

/// The search path of plugin and model names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    plugin_dirs: Vec<PathBuf>,
    model_dirs: Vec<PathBuf>,
}

/// What a name is looked up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<dir>/<name>.wasm`.
    Plugin,
    /// `<dir>/<name>/model.onnx` (its card `model.yaml` beside it).
    Model,
}

/// A name found in no folder of the search path, with what is there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is no {} in {}", kind.noun(), show_dirs(searched))]
pub struct NotFound {
    pub name: String,
    pub kind: Kind,
    pub searched: Vec<PathBuf>,
    /// Every name the search path holds, sorted.
    pub available: Vec<String>,
}

impl NotFound {
    /// What to do: the closest name, the names there are, the flag that adds a folder.
    pub fn fix(&self) -> String {
        let closest = self.available.iter().map(|n| (strsim::levenshtein(n, &self.name), n)).filter(|(d, _)| *d <= 3).min();
        let mut fix = match closest {
            Some((_, n)) => format!("did you mean `{n}`? "),
            None => String::new(),
        };
        if self.available.is_empty() {
            fix.push_str("no folder of the search path holds any (run `make build` for the shipped set)");
        } else {
            fix.push_str(&format!("the names there: {}", self.available.join(", ")));
        }
        fix.push_str(&format!("; add a folder with {}, or give a path ending in `.{}` (relative to the policy file)", self.kind.flag(), self.kind.extension()));
        fix
    }
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Plugin => "plugin",
            Kind::Model => "model",
        }
    }

    /// The flag that puts a folder first in this kind's search path.
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Plugin => "--plugin-dir",
            Kind::Model => "--model-dir",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Plugin => "wasm",
            Kind::Model => "onnx",
        }
    }

    /// Where `name` would be in `dir`.
    fn file(self, dir: &Path, name: &str) -> PathBuf {
        match self {
            Kind::Plugin => dir.join(format!("{name}.wasm")),
            Kind::Model => dir.join(name).join("model.onnx"),
        }
    }

    /// The names `dir` holds.
    fn names(self, dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = match self {
                    Kind::Plugin => path.extension().is_some_and(|e| e == "wasm").then(|| path.file_stem())?,
                    Kind::Model => path.join("model.onnx").is_file().then(|| path.file_name())?,
                };
                name.and_then(|n| n.to_str()).filter(|n| is_name(n)).map(str::to_string)
            })
            .collect()
    }
}

fn show_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "an empty search path".into();
    }
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!("the search path ({})", shown.join(", "))
}

/// Whether a policy's value is a name to look up rather than a path: lower-case letters,
/// digits, `-` and `_`, no `/` and no `.`.
pub fn is_name(value: &str) -> bool {
    !value.is_empty() && value.len() <= 63 && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') && value.as_bytes()[0].is_ascii_alphanumeric()
}

impl Default for Catalog {
    fn default() -> Self {
        Self::shipped()
    }
}

impl Catalog {
    /// The shipped sets only: beside the binary in an install (`<bin>/../share/augur/plugins`
    /// and `.../models`, the image's layout), or the source tree's `plugins/dist` and `models`
    /// for a binary built from it.
    pub fn shipped() -> Self {
        Self::with(Vec::new(), Vec::new())
    }

    /// `plugin_dirs` and `model_dirs` first, in their order, then the shipped sets.
    pub fn with(plugin_dirs: Vec<PathBuf>, model_dirs: Vec<PathBuf>) -> Self {
        let installed = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join("share/augur")));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
        let shipped = |installed_sub: &str, source_sub: &str| -> Vec<PathBuf> {
            let candidates = [installed.as_ref().map(|d| d.join(installed_sub)), source.as_ref().map(|d| d.join(source_sub))];
            candidates.into_iter().flatten().filter(|d| d.is_dir()).map(|d| super::normal(&d)).take(1).collect()
        };
        let absolute = |dirs: Vec<PathBuf>| dirs.iter().map(|d| super::normal(d)).collect::<Vec<_>>();
        let mut plugins = absolute(plugin_dirs);
        plugins.extend(shipped("plugins", "plugins/dist"));
        let mut models = absolute(model_dirs);
        models.extend(shipped("models", "models"));
        Self { plugin_dirs: plugins, model_dirs: models }
    }

    /// Exactly these folders, nothing shipped (for tests).
    pub fn only(plugin_dirs: Vec<PathBuf>, model_dirs: Vec<PathBuf>) -> Self {
        Self { plugin_dirs, model_dirs }
    }

    /// The folders searched for `kind`, first to last.
    pub fn dirs(&self, kind: Kind) -> &[PathBuf] {
        match kind {
            Kind::Plugin => &self.plugin_dirs,
            Kind::Model => &self.model_dirs,
        }
    }

    /// The file `name` stands for: the first folder of the search path that holds it.
    pub fn find(&self, kind: Kind, name: &str) -> Result<PathBuf, NotFound> {
        let dirs = self.dirs(kind);
        if let Some(file) = dirs.iter().map(|d| kind.file(d, name)).find(|f| f.is_file()) {
            return Ok(file);
        }
        let mut available: Vec<String> = dirs.iter().flat_map(|d| kind.names(d)).collect();
        available.sort();
        available.dedup();
        Err(NotFound { name: name.into(), kind, searched: dirs.to_vec(), available })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn names_are_looked_up_first_folder_first() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        touch(&a.path().join("risk-cpu.wasm"));
        touch(&b.path().join("risk-cpu.wasm"));
        touch(&b.path().join("scale.wasm"));
        touch(&b.path().join("lstm/model.onnx"));
        let catalog = Catalog::only(vec![a.path().into(), b.path().into()], vec![b.path().into()]);
        assert_eq!(catalog.find(Kind::Plugin, "risk-cpu").unwrap(), a.path().join("risk-cpu.wasm"));
        assert_eq!(catalog.find(Kind::Plugin, "scale").unwrap(), b.path().join("scale.wasm"));
        assert_eq!(catalog.find(Kind::Model, "lstm").unwrap(), b.path().join("lstm/model.onnx"));
    }

    #[test]
    fn a_missing_name_says_what_there_is_and_the_closest() {
        let dir = tempfile::tempdir().unwrap();
        touch(&dir.path().join("risk-cpu.wasm"));
        touch(&dir.path().join("scale.wasm"));
        touch(&dir.path().join("notes.txt"));
        let catalog = Catalog::only(vec![dir.path().into()], vec![]);
        let missing = catalog.find(Kind::Plugin, "risk-cpx").unwrap_err();
        assert_eq!(missing.available, ["risk-cpu", "scale"]);
        assert!(missing.to_string().starts_with("`risk-cpx` is no plugin in the search path ("), "{missing}");
        assert!(missing.fix().starts_with("did you mean `risk-cpu`? the names there: risk-cpu, scale; add a folder with --plugin-dir"), "{}", missing.fix());
        let model = catalog.find(Kind::Model, "lstm").unwrap_err();
        assert_eq!(model.to_string(), "`lstm` is no model in an empty search path");
    }

    #[test]
    fn a_value_with_a_slash_or_a_dot_is_a_path() {
        assert!(is_name("risk-cpu") && is_name("lstm") && is_name("my_rule2"));
        for path in ["../plugins/dist/risk-cpu.wasm", "risk-cpu.wasm", "./x", "Risk", "", "-x"] {
            assert!(!is_name(path), "{path}");
        }
    }

    #[test]
    fn the_shipped_sets_of_the_source_tree_are_found() {
        let catalog = Catalog::shipped();
        assert!(catalog.find(Kind::Plugin, "risk-cpu").is_ok(), "{catalog:?}");
        assert!(catalog.find(Kind::Model, "transformer").is_ok(), "{catalog:?}");
    }
}
