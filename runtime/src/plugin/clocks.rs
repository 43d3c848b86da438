//! The plugin's monotonic clock, with its waits held to the call's deadline. The time limit of a
//! call is an epoch deadline, checked only in compiled WebAssembly: a plugin blocked in a host
//! call (`std::thread::sleep` is a `monotonic-clock` subscription and a `pollable.block`) would
//! hold its worker for as long as it asked. Here every clock wait ends at the deadline at the
//! latest, a tick past it, so the plugin is back in its own code with the deadline passed and
//! traps there as `plugin-timeout`. A wait within the deadline waits as asked.
//!
//! The clocks are the only way to block: the WASI context grants no stdin, files or sockets.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::{EPOCH_TICK, StoreState};

/// The interface whose subscriptions are replaced, as `wasmtime_wasi` links it; components
/// importing an older 0.2 version are matched to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// The guest's monotonic clock: nanoseconds since the instance was built, so that an instant the
/// guest names can be turned back into a host `Instant`.
pub(super) struct PluginClock {
    pub(super) origin: Instant,
}

impl wasmtime_wasi::HostMonotonicClock for PluginClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A wait that ends at `until`.
struct Wait {
    until: tokio::time::Instant,
}

impl Pollable for Wait {
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(tokio::time::sleep_until(self.until))
    }
}

/// A pollable for a wait of `wanted`, cut at the current call's deadline.
fn wait(
    mut store: StoreContextMut<'_, StoreState>,
    wanted: Duration,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let now = Instant::now();
    let asked = now
        .checked_add(wanted)
        .unwrap_or(now + Duration::from_secs(86_400));
    let state = store.data_mut();
    let until = match state.call_deadline {
        Some(deadline) => asked.min(deadline + EPOCH_TICK),
        None => asked,
    };
    let wait = state.table.push(Wait {
        until: until.into(),
    })?;
    Ok((subscribe(&mut state.table, wait)?,))
}

/// Replaces `subscribe-duration` and `subscribe-instant` of the monotonic clock `wasmtime_wasi`
/// linked.
pub(super) fn hold_waits_to_the_deadline(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |store: StoreContextMut<'_, StoreState>, (duration,): (u64,)| {
            wait(store, Duration::from_nanos(duration))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |store: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
            let now = nanos(store.data().clock_origin.elapsed());
            wait(store, Duration::from_nanos(when.saturating_sub(now)))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
