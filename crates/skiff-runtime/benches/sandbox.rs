//! Sandbox cost: what one request costs skiff in-process, with no sockets and no HTTP parsing.
//!
//! - `sandbox/hello_request`: a fresh instance of `examples/hello/hello.wasm` from its
//!   `InstancePre`, one `wasi:http` request through `LoadedComponent::handle_http` (the same
//!   call the HTTP trigger makes), the response body drained, the store dropped. This is the
//!   figure issue 4 targets (median <= 10 us).
//! - `sandbox/hello_request_reused`: the same request on a component that opts in to instance
//!   reuse (`limits.requests_per_instance = u32::MAX`): after the first request every
//!   iteration takes the warm instance from the component's idle list and gives it back, so
//!   neither instantiation nor store teardown is in the figure. What a component with
//!   `requests_per_instance` set pays per request (not the default; issue 4's target is
//!   `hello_request`).
//! - `sandbox/hello_request_metered`: the same with usage accounting on (a `UsageSink` that
//!   adds to a counter): what metering every request costs (two thread-CPU clock reads per
//!   poll of the guest task, one small allocation, a few atomics).
//! - `sandbox/hello_request_wasi_0_3`: the same request through a WASI 0.3 component
//!   (`tests/guests/http-p3-guest`, `GET /hello`: component-model async, on skiff's second
//!   engine, whose concurrency support is on): a fresh instance, `handle`, the body written
//!   by a guest task after `handle` returned, the store dropped once the body is done. Build
//!   the guest first (`scripts/build-guests.sh`; `bench/run.sh` does). Beside `hello_request`,
//!   what a 0.3 component costs against a 0.2 one; and `hello_request` itself shows that 0.2
//!   components lost nothing (their engine keeps concurrency support off).
//! - `sandbox/hello_request_wasi_0_3_reused`: the same on a kept 0.3 instance
//!   (`requests_per_instance = u32::MAX`), beside `hello_request_reused`.
//! - `sandbox/count_request_wasi_0_2`, `sandbox/count_request_wasi_0_3`: like for like, the
//!   same short answer (`GET /count`) from the two test guests, `tests/guests/http-guest`
//!   (the `wasip2` crate) and `tests/guests/http-p3-guest` (the `wasip3` crate), each in a
//!   fresh instance: what the version of WASI costs, with the guest's own code alike.
//! - `sandbox/hello_instantiate`: the instantiate step alone, on the very engine skiff builds
//!   (`Runtime::engine()`: pooling allocator, copy-on-write images, epoch interruption), with a
//!   minimal host state (an empty `WasiCtx` and `WasiHttpCtx`), then the store dropped (the
//!   slot goes back to the pool). skiff's own `Host` is crate-private, so this links the same
//!   WASI and `wasi:http` interfaces to a stand-in state of the same shape.
//!
//! All run on a current-thread tokio runtime, so the guest task that `handle_http` spawns
//! runs on the measuring thread, without cross-thread wake-ups.
//!
//!     cargo bench -p skiff-runtime --bench sandbox
//!
//! `bench/run.sh` runs this and reads `target/criterion/sandbox/*/new/estimates.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A panic here is a failure with its message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use skiff_runtime::{LoadOptions, LoadedComponent, RequestInfo, Runtime, RuntimeConfig, UsageSink};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

fn hello_wasm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

fn runtime() -> Arc<Runtime> {
    let mut config = RuntimeConfig::default();
    // Compile in memory: the bench must not depend on (or fill) the user's code cache.
    config.cache_dir = None;
    Runtime::new(config).expect("building the runtime")
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn one_request(component: &LoadedComponent, request_id: u64) -> Bytes {
    request_at(component, "/", request_id).await
}

async fn request_at(component: &LoadedComponent, path: &str, request_id: u64) -> Bytes {
    let request = http::Request::builder()
        .method("GET")
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost")
        .body(
            Empty::<Bytes>::new().map_err(|never| -> wasmtime_wasi_http::Error { match never {} }),
        )
        .expect("request");
    let response = component
        .handle_http(
            request,
            RequestInfo {
                request_id,
                https: false,
                trace: Default::default(),
                calls: None,
            },
        )
        .await
        .expect("the hello component answers");
    assert_eq!(response.status(), 200);
    response
        .into_body()
        .collect()
        .await
        .expect("the body completes")
        .to_bytes()
}

fn hello_request(c: &mut Criterion) {
    let rt = tokio_rt();
    let runtime = runtime();
    let app = skiff_manifest::load(&hello_wasm().join("skiff.toml")).expect("examples/hello");
    let loaded = runtime.load_app(app).expect("loading examples/hello");
    let component = loaded.components()[0].clone();
    assert_eq!(rt.block_on(one_request(&component, 0)), "hello\n");

    let mut id = 0;
    c.benchmark_group("sandbox")
        .bench_function("hello_request", |b| {
            b.iter(|| {
                id += 1;
                rt.block_on(one_request(&component, id))
            })
        });
}

fn hello_request_reused(c: &mut Criterion) {
    let rt = tokio_rt();
    let runtime = runtime();
    let mut app = skiff_manifest::load(&hello_wasm().join("skiff.toml")).expect("examples/hello");
    // The opt-in of `[component.hello.limits] requests_per_instance`, with no end: one
    // instance serves every iteration.
    app.components[0].limits.requests_per_instance = Some(u32::MAX);
    let loaded = runtime.load_app(app).expect("loading examples/hello");
    let component = loaded.components()[0].clone();
    // The first request instantiates; the instance is then kept for the next ones.
    assert_eq!(rt.block_on(one_request(&component, 0)), "hello\n");

    let mut id = 0;
    c.benchmark_group("sandbox")
        .bench_function("hello_request_reused", |b| {
            b.iter(|| {
                id += 1;
                rt.block_on(one_request(&component, id))
            })
        });
}

fn hello_request_metered(c: &mut Criterion) {
    let rt = tokio_rt();
    let runtime = runtime();
    let app = skiff_manifest::load(&hello_wasm().join("skiff.toml")).expect("examples/hello");
    let reported = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut options = LoadOptions::default();
    options.usage = Some(UsageSink::new({
        let reported = reported.clone();
        move |usage| {
            reported.fetch_add(usage.bytes_out, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    let loaded = runtime
        .load_app_with(app, &options)
        .expect("loading examples/hello");
    let component = loaded.components()[0].clone();
    assert_eq!(rt.block_on(one_request(&component, 0)), "hello\n");

    let mut id = 0;
    c.benchmark_group("sandbox")
        .bench_function("hello_request_metered", |b| {
            b.iter(|| {
                id += 1;
                rt.block_on(one_request(&component, id))
            })
        });
    assert!(reported.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// A test guest built by `scripts/build-guests.sh` under the target folder.
fn test_guest(file: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("guests/wasm32-wasip2/release").join(file);
    assert!(
        path.exists(),
        "{} is missing: build the test guests first (scripts/build-guests.sh)",
        path.display()
    );
    path
}

/// `wasm` loaded as a one-component app on every path, its instances kept for ever
/// (`requests_per_instance = u32::MAX`) when `reused`.
fn load_guest(runtime: &Runtime, wasm: &Path, reused: bool) -> Arc<LoadedComponent> {
    let folder = tempfile::tempdir().expect("a temporary folder");
    std::fs::copy(wasm, folder.path().join("guest.wasm")).expect("copying the guest");
    std::fs::write(
        folder.path().join("skiff.toml"),
        "[app]\nname = \"guest\"\nversion = \"1.0.0\"\n\n\
         [component.guest]\nsource = \"guest.wasm\"\nroute = \"/...\"\n",
    )
    .expect("writing the manifest");
    let mut app = skiff_manifest::load(&folder.path().join("skiff.toml")).expect("the manifest");
    if reused {
        app.components[0].limits.requests_per_instance = Some(u32::MAX);
    }
    let loaded = runtime.load_app(app).expect("loading the guest");
    loaded.components()[0].clone()
}

/// Benchmarks `GET path` on `wasm` as `sandbox/NAME`, after checking that it answers.
fn bench_guest(c: &mut Criterion, name: &str, wasm: &Path, reused: bool, path: &str) {
    let rt = tokio_rt();
    let runtime = runtime();
    let component = load_guest(&runtime, wasm, reused);
    let first = rt.block_on(request_at(&component, path, 0));
    assert!(!first.is_empty(), "{name}: an empty answer");
    let mut id = 0;
    c.benchmark_group("sandbox").bench_function(name, |b| {
        b.iter(|| {
            id += 1;
            rt.block_on(request_at(&component, path, id))
        })
    });
}

fn hello_request_wasi_0_3(c: &mut Criterion) {
    let p3 = test_guest("http_p3_guest.wasm");
    bench_guest(c, "hello_request_wasi_0_3", &p3, false, "/hello");
    bench_guest(c, "hello_request_wasi_0_3_reused", &p3, true, "/hello");
}

/// The same small answer (`/count`) from the two test guests, one built with the `wasip2`
/// crate, one with `wasip3`: the two versions of WASI side by side, like for like.
fn count_request_by_wasi_version(c: &mut Criterion) {
    let p2 = test_guest("http_guest.wasm");
    let p3 = test_guest("http_p3_guest.wasm");
    bench_guest(c, "count_request_wasi_0_2", &p2, false, "/count");
    bench_guest(c, "count_request_wasi_0_3", &p3, false, "/count");
}

/// A stand-in for skiff's crate-private `Host`: the same context types, nothing granted.
struct BenchHost {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
}

impl WasiView for BenchHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for BenchHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

fn hello_instantiate(c: &mut Criterion) {
    let rt = tokio_rt();
    let runtime = runtime();
    let engine = runtime.engine().clone();
    let component =
        Component::from_file(&engine, hello_wasm().join("hello.wasm")).expect("compiling hello");
    let mut linker = Linker::<BenchHost>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("linking WASI");
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).expect("linking http");
    let pre = ProxyPre::new(linker.instantiate_pre(&component).expect("instantiate_pre"))
        .expect("hello exports wasi:http/incoming-handler");

    let new_store = || {
        let mut store = Store::new(
            &engine,
            BenchHost {
                table: ResourceTable::new(),
                wasi: WasiCtxBuilder::new().build(),
                http: WasiHttpCtx::new(),
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        store
    };
    c.benchmark_group("sandbox")
        .bench_function("hello_instantiate", |b| {
            b.iter_batched(
                new_store,
                |mut store| {
                    rt.block_on(pre.instantiate_async(&mut store))
                        .expect("instantiating hello");
                    // Dropped here, inside the timed part: returning the slot to the pool is part
                    // of an instance's life.
                    drop(store);
                },
                BatchSize::SmallInput,
            )
        });
}

fn config() -> Criterion {
    // Short by default so `bench/run.sh` stays quick; criterion's own flags
    // (`--measurement-time`, `--sample-size`) still override these.
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50)
}

criterion_group! {
    name = sandbox;
    config = config();
    targets = hello_request, hello_request_reused, hello_request_metered, hello_request_wasi_0_3,
        count_request_by_wasi_version, hello_instantiate
}
criterion_main!(sandbox);
