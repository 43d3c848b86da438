//! The map of the library's modules by layer, and the test that keeps it true: a module uses
//! only modules of the layers below its own, so there is no circle and no import upwards.

/// Lowest first. Every top-level module of `runtime/src` is in exactly one layer.
const LAYERS: &[&[&str]] = &[
    // Data and helpers that know nothing of the rest.
    &[
        "contract",
        "failure",
        "kafka",
        "offsets",
        "scaffold",
        "stable_hash",
    ],
    // Settings, and the counters every part writes.
    &["config", "metrics"],
    // The parts: the model client, the WebAssembly host, the consumer and the producer.
    &["inference", "plugin", "sink", "source"],
    // The record path that joins the parts.
    &["pipeline"],
    // Why a run did not start or stop cleanly, for the streaming run and the offline tools.
    &["error"],
    // What runs beside or instead of the record path.
    &["endpoint", "offline", "reload"],
    // The library's root: `run`, which starts everything.
    &["lib"],
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    /// The top-level module a file of `runtime/src` belongs to.
    fn module_of(src: &Path, file: &Path) -> String {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a file");
        let name = first.as_os_str().to_string_lossy();
        name.strip_suffix(".rs").unwrap_or(&name).to_owned()
    }

    fn files(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// The top-level modules `text` names after `crate::`, in paths and in `use` groups.
    fn uses(text: &str) -> Vec<String> {
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The first name of each item at the group's top level.
                let (mut depth, mut item_start, mut end) = (0, true, group.len());
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            end = i;
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            let name: String = group[i..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            found.push(name);
                            item_start = false;
                        }
                        _ => {}
                    }
                }
                rest = &group[end..];
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
        found
    }

    #[test]
    fn groups_are_read_to_their_first_names() {
        let text = "use crate::{a::B, c, d::{e, f}};\n// crate::comment\nlet x = crate::g::h();";
        assert_eq!(uses(text), ["a", "c", "d", "g"]);
    }

    #[test]
    fn every_module_uses_only_the_layers_below_its_own() {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut problems = Vec::new();
        for file in &all {
            let module = module_of(&src, file);
            if module == "main" || module == "layers" {
                continue;
            }
            let Some(own) = layer(&module) else {
                problems.push(format!("module `{module}` is in no layer of layers.rs"));
                continue;
            };
            let text = std::fs::read_to_string(file).expect("readable source file");
            for used in uses(&text) {
                // An item of the crate root (a re-export) counts as the root.
                let used_layer = layer(&used).unwrap_or(LAYERS.len() - 1);
                if used != module && used_layer >= own {
                    problems.push(format!(
                        "{} (layer {own}, `{module}`) uses `{used}` (layer {used_layer})",
                        file.strip_prefix(&src).unwrap_or(file).display()
                    ));
                }
            }
        }
        problems.sort();
        problems.dedup();
        assert!(
            problems.is_empty(),
            "imports against the layers:\n{}",
            problems.join("\n")
        );
    }
}
