//! Logging into the host's log, attributed to the plugin.
//!
//! Inside a component these call the `log` import of the plugin world. Compiled for any other
//! target (a plugin's native unit tests) they print to standard error instead, so plugin logic
//! runs and is tested without a Wasm host. Messages are formatted by the caller: keep
//! per-record messages at [`trace`] or [`debug`].

pub use crate::bindings::streaminfer::plugin::log::Level;

/// Logs `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::streaminfer::plugin::log::log(level, message);

    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {}] {message}", level_name(level));
}

/// Logs at `trace` level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs at `debug` level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at `info` level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at `warn` level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at `error` level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[cfg(not(target_arch = "wasm32"))]
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn logging_natively_does_not_call_the_import() {
        super::info("hello from a native test");
        super::log(super::Level::Trace, "and at trace");
    }
}
