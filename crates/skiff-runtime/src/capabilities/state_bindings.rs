//! Host bindings of the `skiff:host/state` world (`wit/world.wit`): wasi:keyvalue,
//! wasi:config and wasi:logging, generated once for the capabilities that implement them.

wasmtime::component::bindgen!({
    path: "wit",
    world: "skiff:host/state",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store@0.2.0-draft.bucket": super::keyvalue::Bucket,
        "wasi:keyvalue/store@0.2.0-draft2.bucket": super::keyvalue::Bucket,
        "wasi:keyvalue/atomics@0.2.0-draft2.cas": super::keyvalue::draft2::Cas,
    },
});
