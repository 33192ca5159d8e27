//! `host plugin new`: a plugin crate that stands alone, outside this repository: its own
//! Cargo.toml (and `[workspace]`, so that no enclosing workspace claims it), the WIT of this
//! host's version under `wit/`, the SDK beside it under `sdk/` (the same source the shipped
//! plugins use), the template of its world (the workspace's `plugins/template*`, which are
//! built and tested here), and a sample input for `host plugin run`.

use super::plugin_run::Sample;
use crate::plugins::World;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The plugin contract of this host.
const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The SDK's source, as the shipped plugins build it.
const SDK: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const RISK_TEMPLATE: &str = include_str!("../../../plugins/template/src/lib.rs");
const REMEDIATION_TEMPLATE: &str = include_str!("../../../plugins/template-remediation/src/lib.rs");
/// The wit-bindgen the shipped plugins are built with (a test holds it to the workspace's).
const WIT_BINDGEN: &str = "0.63";

/// What `host plugin new` wrote.
#[derive(Debug)]
pub struct Scaffold {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The sample input for `host plugin run`.
    pub sample: PathBuf,
    /// Where `cargo build --target wasm32-wasip2 --release` puts the component.
    pub component: PathBuf,
}

/// Writes a new plugin crate `name` of `world` into `dir` (created; it must be empty).
pub fn plugin_new(name: &str, world: World, dir: &Path) -> anyhow::Result<Scaffold> {
    let valid = name.len() <= 63 && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !name.ends_with('-');
    if !valid {
        return Err(super::invalid(format!("`{name}` is not a plugin name; fix: use lower-case letters, digits and `-`, starting with a letter (it names the crate, the .wasm and the plugin in a policy), e.g. `risk-queue`")));
    }
    if dir.exists() && std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?.next().is_some() {
        return Err(super::invalid(format!("{} is not empty; fix: name a new or empty folder (nothing is overwritten)", dir.display())));
    }
    let (template, template_name, sample_file) = match world {
        World::Risk => (RISK_TEMPLATE, "template", "samples/forecast.json"),
        World::Remediation => (REMEDIATION_TEMPLATE, "template-remediation", "samples/plan.json"),
    };
    let Some(source) = adapt(template, template_name, name) else {
        bail!("the built-in {template_name} template does not have the shape `plugin new` expects (a bug in this host)");
    };
    let sample = serde_json::to_string_pretty(&Sample::example(world))? + "\n";
    let crate_file = name.replace('-', "_");
    let version = env!("CARGO_PKG_VERSION");
    let contents: [(&str, String); 8] = [
        ("Cargo.toml", cargo_toml(name, world)),
        ("src/lib.rs", source),
        ("wit/plugin.wit", WIT.to_string()),
        ("sdk/Cargo.toml", sdk_toml(version)),
        ("sdk/src/lib.rs", SDK.to_string()),
        (sample_file, sample),
        ("README.md", readme(name, world, &crate_file, sample_file)),
        (".gitignore", "/target\n".to_string()),
    ];
    let mut files = Vec::new();
    for (relative, text) in contents {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("a file under dir")).with_context(|| format!("cannot create {}", path.parent().unwrap().display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
    }
    Ok(Scaffold { dir: dir.to_path_buf(), files, sample: dir.join(sample_file), component: dir.join(format!("target/wasm32-wasip2/release/{crate_file}.wasm")) })
}

/// The template's source for a crate of its own: the WIT from `wit/`, its name in the header.
fn adapt(template: &str, template_name: &str, name: &str) -> Option<String> {
    let wit_path = r#"path: "../../wit" }"#;
    let header = format!("//! {template_name}: ");
    if !template.contains(wit_path) || !template.starts_with(&header) {
        return None;
    }
    Some(format!("//! {name}: {}", &template[header.len()..]).replace(wit_path, r#"path: "wit" }"#))
}

fn cargo_toml(name: &str, world: World) -> String {
    let what = match world {
        World::Risk => "risk",
        World::Remediation => "remediation",
    };
    format!(
        r#"[package]
name = "{name}"
description = "An Augur {what} plugin"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
# cdylib: the component for wasm32-wasip2; rlib: native unit tests of the logic (`cargo test`).
crate-type = ["cdylib", "rlib"]

[dependencies]
augur-plugin-sdk = {{ path = "sdk" }}
wit-bindgen = "{WIT_BINDGEN}"

# A plugin is a small sandboxed guest, called in a fresh instance each time: build it small.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true

# A crate of its own, even inside another workspace's folder.
[workspace]
"#
    )
}

fn sdk_toml(version: &str) -> String {
    format!(
        r#"[package]
name = "augur-plugin-sdk"
description = "Helpers shared by Augur's plugins: typed settings with collected errors (the copy of Augur {version})"
version = "{version}"
edition = "2024"
rust-version = "1.95"
publish = false
"#
    )
}

fn readme(name: &str, world: World, crate_file: &str, sample: &str) -> String {
    format!(
        r#"# {name}

An Augur plugin of the `{world}` world, made by `host plugin new`. `wit/` is the plugin contract
of the host that made it and `sdk/` the helpers its plugins use; both are copies, so this crate
builds anywhere, with no path into Augur's repository.

    cargo test                                          # the logic, natively
    cargo build --target wasm32-wasip2 --release        # the component
    host plugin check target/wasm32-wasip2/release/{crate_file}.wasm
    host plugin run target/wasm32-wasip2/release/{crate_file}.wasm --input {sample}

To use it, copy the component as `{name}.wasm` into a folder given to `host run --plugin-dir`
(the Helm chart's `pluginDirs`), and name it in a policy: `plugin: {name}`.
"#,
        world = world.wit_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_bindgen_of_a_new_plugin_is_the_workspaces() {
        let workspace = include_str!("../../../Cargo.toml");
        assert!(workspace.lines().any(|l| l == format!("wit-bindgen = \"{WIT_BINDGEN}\"")), "the workspace's wit-bindgen moved; move WIT_BINDGEN with it");
    }

    #[test]
    fn both_templates_adapt() {
        assert!(adapt(RISK_TEMPLATE, "template", "x").unwrap().contains(r#"path: "wit" }"#));
        assert!(adapt(REMEDIATION_TEMPLATE, "template-remediation", "x").unwrap().starts_with("//! x: "));
    }

    #[test]
    fn a_bad_name_or_a_folder_in_use_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let err = plugin_new("Risk_Queue", World::Risk, &dir.path().join("a")).unwrap_err();
        assert!(err.to_string().contains("is not a plugin name; fix: use lower-case letters"), "{err}");
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = plugin_new("risk-queue", World::Risk, dir.path()).unwrap_err();
        assert!(err.to_string().contains("is not empty; fix: name a new or empty folder"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
    }
}
