//! Hot reload of the plugin: when its file changes (polled, and settled for one interval so a
//! half-written file is not taken) or on SIGHUP, the new component is compiled, instantiated,
//! configured and checked against the model, all off the record path. If every step passes it
//! replaces the old one for new batches, while batches in flight finish on the old one; if any
//! step fails the old one keeps serving and the reason is logged. Every output carries the
//! digest of the plugin that made it, so a reload is visible record by record.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::PluginSettings;
use crate::inference::{ModelDescription, mismatches};
use crate::plugin::{Current, PluginHost, PluginPool};

/// What a file looks like from outside; a change of either means new content.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches the plugin file until the task is aborted or the pipeline is gone; a new plugin must
/// fit `model` as the first did. It holds the plugin's slot weakly, so that at shutdown the
/// pipeline holds the last reference and can stop the plugin's threads.
pub(crate) async fn watch(
    host: Arc<PluginHost>,
    settings: PluginSettings,
    current: std::sync::Weak<Current>,
    model: ModelDescription,
    interval: Duration,
) {
    let mut hangup = hangup_signal();
    let mut loaded = stamp(&settings.path);
    let mut seen = loaded;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = ticker.tick() => false,
            Some(()) = recv(&mut hangup) => true,
        };
        let now = stamp(&settings.path);
        // Take a changed file only once it has stayed the same for a whole interval.
        let settled = now != loaded && now == seen;
        seen = now;
        if forced || settled {
            let Some(current) = current.upgrade() else {
                return;
            };
            loaded = now;
            reload(&host, &settings, &current, &model).await;
        }
    }
}

async fn reload(
    host: &Arc<PluginHost>,
    settings: &PluginSettings,
    serving: &Current,
    model: &ModelDescription,
) {
    let current = serving.get().digest().clone();
    let route = serving.get().route();
    let stats = host.stats().clone();
    let (host, settings_owned) = (host.clone(), settings.clone());
    let built = tokio::task::spawn_blocking(move || {
        let loaded = host.load(&settings_owned)?;
        if loaded.digest() == &current {
            return Ok(None);
        }
        PluginPool::start(loaded, settings_owned.workers).map(|pool| Some(pool.routed(route)))
    })
    .await;
    let previous = serving.get().digest().clone();
    let pool = match built {
        Ok(Ok(Some(pool))) => pool,
        Ok(Ok(None)) => {
            tracing::debug!(plugin = %settings.path.display(), "plugin file unchanged in content");
            return;
        }
        Ok(Err(error)) => {
            tracing::warn!(plugin = %settings.path.display(), %error, serving = %previous, "plugin reload refused");
            stats.reloaded(false);
            return;
        }
        Err(panic) => {
            tracing::error!(plugin = %settings.path.display(), error = %panic, serving = %previous, "plugin reload failed");
            stats.reloaded(false);
            return;
        }
    };
    let disagreements = mismatches(pool.requirements(), model);
    if !disagreements.is_empty() {
        tracing::warn!(
            plugin = %settings.path.display(),
            serving = %previous,
            error = %disagreements.join("; "),
            "plugin reload refused: the new plugin does not fit the model"
        );
        pool.shutdown();
        stats.reloaded(false);
        return;
    }
    let digest = pool.digest().clone();
    drop(serving.swap(pool));
    stats.reloaded(true);
    tracing::info!(plugin = %settings.path.display(), from = %previous, to = %digest, "plugin reloaded");
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the plugin reloads on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_hangup: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
