//! Host bindings generated from `wit/`, the single source of truth of the plugin contract. The
//! contract's data types are not generated here: they are [`crate::contract`]'s (through
//! [`super::types`]), which the rest of the runtime shares without depending on this module.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "streaminfer:plugin/plugin",
    additional_derives: [PartialEq],
    with: {
        "streaminfer:plugin/types": super::types,
    },
});
