//! Host bindings generated from `wit/`, the single source of truth of the plugin contract.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "streaminfer:plugin/plugin",
    additional_derives: [PartialEq],
});
