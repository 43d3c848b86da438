//! `runtime new-plugin`: writes a plugin crate that stands on its own, anywhere. It is the
//! template plugin (`plugins/template`) with a manifest of its own: explicit versions, the
//! `plugin` build profile, an empty `[workspace]` so that no enclosing workspace claims it, and a
//! toolchain file naming the `wasm32-wasip2` target. The SDK comes from a path or a git
//! repository.

use std::path::{Path, PathBuf};

/// The template's source, the same file the workspace builds and tests.
const LIB_RS: &str = include_str!("../../plugins/template/src/lib.rs");
/// The toolchain this repository builds with.
const TOOLCHAIN: &str = include_str!("../../rust-toolchain.toml");

/// Where a new plugin gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A directory holding the `streaminfer-sdk` crate.
    Path(PathBuf),
    /// A git repository holding it (this repository, or a fork).
    Git(String),
}

impl Sdk {
    /// The SDK beside the runtime's own sources, when the runtime runs from a checkout.
    pub fn beside_sources() -> Option<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        dir.join("Cargo.toml")
            .is_file()
            .then(|| Self::Path(dir.canonicalize().unwrap_or(dir)))
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(path) => format!("{{ path = {} }}", toml_string(&path.display().to_string())),
            Sdk::Git(url) => format!("{{ git = {} }}", toml_string(url)),
        }
    }
}

/// `text` as a TOML string, escaped as TOML (not Rust) escapes.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Why no plugin was written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{0:?} is not a valid crate name: use lowercase ASCII letters, digits, '-' and '_', starting with a letter"
    )]
    Name(String),
    #[error("{0} exists already: choose another directory")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the crate `name` into `dir` (which must not exist); returns the files written.
///
/// # Errors
/// [`ScaffoldError`] naming the bad name, the existing directory or the file not written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let files = [
        ("Cargo.toml", manifest(name, sdk)),
        ("rust-toolchain.toml", TOOLCHAIN.to_owned()),
        ("src/lib.rs", LIB_RS.to_owned()),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (file, text) in files {
        let path = dir.join(file);
        let write = |path: &Path| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)
        };
        write(&path).map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn manifest(name: &str, sdk: &Sdk) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the WebAssembly component; rlib: the native build its unit tests use.
crate-type = ["cdylib", "rlib"]

[dependencies]
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
streaminfer-sdk = {sdk}

# A crate of its own: no enclosing workspace claims it.
[workspace]

# Build with `cargo build --target wasm32-wasip2 --profile plugin`: plugins run on the hot
# path, so optimise for speed, and strip symbols.
[profile.plugin]
inherits = "release"
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        sdk = sdk.dependency()
    )
}

fn readme(name: &str) -> String {
    let file = name.replace('-', "_");
    format!(
        r#"# {name}

A streaminfer plugin, started from the template: it reads `{{"id": "...", "features": [numbers]}}`,
asks the model for one score, and emits `{{"id": "...", "score": s, "flagged": s >= threshold}}`.
Edit `src/lib.rs`; the guide is `docs/plugins.md` in the streaminfer repository.

```sh
cargo test                                              # unit tests, natively
cargo build --target wasm32-wasip2 --profile plugin     # -> target/wasm32-wasip2/plugin/{file}.wasm
runtime check --plugin target/wasm32-wasip2/plugin/{file}.wasm --input records.jsonl
runtime replay --plugin target/wasm32-wasip2/plugin/{file}.wasm config.toml --input records.jsonl
```
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_plugin_is_a_crate_of_its_own() {
        let dir = std::env::temp_dir().join(format!("new-plugin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sdk = Sdk::Git("https://example.org/streaminfer.git".into());
        let written = new_plugin("my-scorer", &dir, &sdk).expect("written");
        assert_eq!(written.len(), 5);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
        assert!(manifest.contains("name = \"my-scorer\""), "{manifest}");
        assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
        assert!(manifest.contains("[profile.plugin]"), "{manifest}");
        assert!(
            manifest
                .contains(r#"streaminfer-sdk = { git = "https://example.org/streaminfer.git" }"#),
            "{manifest}"
        );
        assert!(
            !manifest.contains(".workspace"),
            "nothing inherited: {manifest}"
        );
        let toml: toml::Table = manifest.parse().expect("valid TOML");
        assert!(toml.contains_key("package"));
        assert!(matches!(
            new_plugin("my-scorer", &dir, &sdk),
            Err(ScaffoldError::Exists(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleaned up");
        for bad in ["My", "1st", "a b", "", "plugin/x"] {
            assert!(
                matches!(new_plugin(bad, &dir, &sdk), Err(ScaffoldError::Name(_))),
                "{bad:?}"
            );
        }
        assert!(!dir.exists(), "nothing written for a bad name");
    }

    #[test]
    fn an_sdk_path_is_written_as_toml_whatever_it_holds() {
        let sdk = Sdk::Path(PathBuf::from("/tmp/cafe\u{301}/\"sdk\"\\x"));
        let manifest = manifest("p", &sdk);
        let parsed: toml::Table = manifest.parse().expect("valid TOML");
        assert_eq!(
            parsed["dependencies"]["streaminfer-sdk"]["path"].as_str(),
            Some("/tmp/cafe\u{301}/\"sdk\"\\x")
        );
    }

    #[test]
    fn the_sdk_beside_the_sources_is_found_in_a_checkout() {
        let Some(Sdk::Path(path)) = Sdk::beside_sources() else {
            panic!("this test runs in a checkout");
        };
        assert!(
            path.join("wit/plugin.wit").is_file(),
            "the SDK ships its WIT"
        );
    }
}
