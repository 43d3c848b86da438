//! What the integration tests share: where the compiled plugins are, and fraud records.

use std::path::PathBuf;

/// A plugin component built by `scripts/test.sh`: the path in the environment variable `var`,
/// else `target/wasm32-wasip2/plugin/<file>`. Fails the test, saying how to build it, when it
/// is missing.
pub(crate) fn plugin(var: &str, file: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/plugin")
                .join(file)
        },
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {package} --target wasm32-wasip2 --profile plugin`",
        path.display()
    );
    path
}

/// The fraud plugin.
#[allow(dead_code, reason = "not every test crate uses every helper")]
pub(crate) fn fraud_plugin() -> PathBuf {
    plugin("FRAUD_PLUGIN", "fraud_plugin.wasm", "fraud-plugin")
}

/// A card transaction as the fraud plugin reads it: `id`, `Time`, `V1`..`V28` from `v(i)`, and
/// `Amount`.
#[allow(dead_code, reason = "not every test crate uses every helper")]
pub(crate) fn transaction(id: u64, time: f64, v: impl Fn(u32) -> f64, amount: f64) -> String {
    let mut fields = vec![format!("\"id\": {id}"), format!("\"Time\": {time:?}")];
    fields.extend((1..=28).map(|i| format!("\"V{i}\": {}", v(i))));
    fields.push(format!("\"Amount\": {amount}"));
    format!("{{{}}}", fields.join(", "))
}
