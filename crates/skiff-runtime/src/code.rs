//! Wasm files to compiled code: reading them, telling a component from a core module, and
//! compiling (or mapping from the [`CodeCache`]) each kind.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::cache::{CacheOutcome, CodeCache, CodeKind};
use crate::error::{LoadError, LoadErrorKind};

/// What the kind of Wasm file is, from its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WasmKind {
    Component,
    CoreModule,
}

pub(crate) fn wasm_kind(path: &Path, bytes: &[u8]) -> Result<WasmKind, LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::new(path, LoadErrorKind::NotWasm));
    }
    // Bytes 4..8 are the version and layer: `01 00 00 00` for a core module, layer 1 for a
    // component.
    Ok(if bytes[6..8] == [1, 0] {
        WasmKind::Component
    } else {
        WasmKind::CoreModule
    })
}

/// Whether a compile error (`LoadErrorKind::Invalid`'s reason, from an engine without
/// component-model async) is that feature missing: the component uses WASI 0.3 or other
/// component-model async, and compiles on the async engine only.
pub(crate) fn needs_component_model_async(invalid: &str) -> bool {
    invalid.contains("component model async")
}

/// Which WASI 0.3 interfaces a component exports (at its top level, or a component nested in
/// it does). Either means component-model async: the component compiles on the async engine
/// only. A parse error here says nothing: compiling reports it.
#[derive(Default, Clone, Copy)]
pub(crate) struct Wasi03Exports {
    /// `wasi:http/handler@0.3`: an HTTP component.
    pub http_handler: bool,
    /// `wasi:cli/run@0.3`: a command.
    pub cli_run: bool,
}

/// The [`Wasi03Exports`] of `wasm`, from one pass over its export sections.
pub(crate) fn wasi_0_3_exports(wasm: &[u8]) -> Wasi03Exports {
    let mut found = Wasi03Exports::default();
    for payload in wasmparser::Parser::new(0)
        .parse_all(wasm)
        .map_while(Result::ok)
    {
        if let wasmparser::Payload::ComponentExportSection(exports) = payload {
            for export in exports.into_iter().map_while(Result::ok) {
                found.http_handler |= export.name.name.starts_with("wasi:http/handler@0.3");
                found.cli_run |= export.name.name.starts_with("wasi:cli/run@0.3");
            }
        }
    }
    found
}

pub(crate) fn read_wasm(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|err| LoadError::new(path, LoadErrorKind::Read(err)))
}

/// Compiles component bytes read from `path`, or loads their compiled code from the cache.
/// Core modules are refused with the fix.
#[allow(unsafe_code)] // Mapping compiled code: see the SAFETY note below.
pub(crate) fn component(
    engine: &Engine,
    cache: &CodeCache,
    path: &Path,
    wasm: &[u8],
) -> Result<(Component, CacheOutcome), LoadError> {
    if wasm_kind(path, wasm)? == WasmKind::CoreModule {
        return Err(LoadError::new(
            path,
            LoadErrorKind::Invalid(
                "this is a core module, not a component: build it for wasm32-wasip2, or wrap \
                 it with `wasm-tools component new`"
                    .into(),
            ),
        ));
    }
    cache.load(
        engine,
        path,
        wasm,
        CodeKind::Component,
        // SAFETY: see `CodeCache::load`: only files we wrote and checksummed get here.
        |file| unsafe { Component::deserialize_file(engine, file) },
        |bytes| unsafe { Component::deserialize(engine, bytes) },
    )
}

/// Compiles core module bytes (a WASI preview 1 command), or loads them from the cache.
#[allow(unsafe_code)] // Mapping compiled code: see `component`.
pub(crate) fn module(
    engine: &Engine,
    cache: &CodeCache,
    path: &Path,
    wasm: &[u8],
) -> Result<(Module, CacheOutcome), LoadError> {
    cache.load(
        engine,
        path,
        wasm,
        CodeKind::Module,
        // SAFETY: see `CodeCache::load`.
        |file| unsafe { Module::deserialize_file(engine, file) },
        |bytes| unsafe { Module::deserialize(engine, bytes) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_component_from_module() {
        let p = Path::new("x.wasm");
        assert_eq!(
            wasm_kind(p, b"\0asm\x0d\x00\x01\x00").unwrap(),
            WasmKind::Component
        );
        assert_eq!(
            wasm_kind(p, b"\0asm\x01\x00\x00\x00").unwrap(),
            WasmKind::CoreModule
        );
        assert!(matches!(
            wasm_kind(p, b"#!/bin/sh\n").unwrap_err().kind,
            LoadErrorKind::NotWasm
        ));
        assert!(matches!(
            wasm_kind(p, b"\0as").unwrap_err().kind,
            LoadErrorKind::NotWasm
        ));
    }
}
