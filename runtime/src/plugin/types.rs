//! The contract's `types` interface as the generated bindings see it: its data types are
//! [`crate::contract`]'s, and the host side bindgen expects of an imported interface is empty,
//! since `types` declares no function.

use wasmtime::component::{HasData, Linker};

pub use crate::contract::*;

/// The instance name of `types` in a component built against this contract version.
pub(super) const INSTANCE: &str = "streaminfer:plugin/types@0.3.0";

/// What the host implements for `types`: nothing.
pub trait Host {}

impl<H: Host + ?Sized> Host for &mut H {}

/// The store-aware side of [`Host`]: nothing either.
pub trait HostWithStore<T>: HasData {}

impl<H: HasData + ?Sized, T> HostWithStore<T> for H {}

/// Links `types`: an instance with no functions.
///
/// # Errors
/// When the linker already defines it.
pub fn add_to_linker<T: 'static, D>(
    linker: &mut Linker<T>,
    _host_getter: fn(&mut T) -> D::Data<'_>,
) -> wasmtime::Result<()>
where
    D: HostWithStore<T>,
    for<'a> D::Data<'a>: Host,
{
    linker.instance(INSTANCE)?;
    Ok(())
}
