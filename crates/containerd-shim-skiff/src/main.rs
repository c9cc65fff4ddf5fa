//! `containerd-shim-skiff-v1`: the containerd shim that runs skiff apps as containers, so a
//! Kubernetes Pod with `runtimeClassName: skiff` is a skiff app (containerd's
//! `runtime_type = "io.containerd.skiff.v1"`).
//!
//! runwasi's `containerd-shim-wasm` does the container side: containerd's task API, the
//! container's namespaces, cgroup and rootfs, stdio. It then calls [`SkiffSandbox::run_wasi`]
//! as process 1 inside the container, where this crate runs the workload through the same
//! spine as `skiff up` (`skiff_http::Standalone`): an app whose `/skiff.toml` the image holds
//! (`skiff push --image`) is served on the Pod's network; a single component named by the
//! image's entrypoint is served if it is a `wasi:http` component or run to its exit code if
//! it is a `wasi:cli` command (so Jobs work).
//!
//! Modules: `pod` (what the container's spec and cgroup say: port, variables, memory),
//! `workload` (what the rootfs holds, and running it), `node_cache` (compiled code kept on the
//! node, out of every guest's reach).

#![forbid(unsafe_code)]

mod node_cache;
mod pod;
mod workload;

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::shim::{Cli, Shim, Version, version};

struct SkiffShim;

impl Shim for SkiffShim {
    type Sandbox = SkiffSandbox;

    fn name() -> &'static str {
        "skiff"
    }

    fn version() -> Version {
        version!()
    }
}

#[derive(Default)]
struct SkiffSandbox;

impl Sandbox for SkiffSandbox {
    /// Runs the container's workload to its end; the returned code is the container's exit
    /// status. Errors are told on the container's stderr (what `kubectl logs` shows) and in
    /// containerd's log, and end the container with status 1: runwasi's default for an error,
    /// 137, would read as "killed" (or out of memory) to Kubernetes.
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let spec = workload::ContainerSpec::of(ctx);
        match workload::run(spec).await {
            Ok(code) => Ok(code),
            Err(err) => {
                eprintln!("error: {err:#}");
                tracing::error!("{err:#}");
                Ok(1)
            }
        }
    }

    /// Whether this container is one skiff runs. The default check would read the entrypoint
    /// as a Wasm or WAT file, which `/skiff.toml` is not.
    async fn can_handle(&self, ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        workload::Workload::find(&workload::ContainerSpec::of(ctx)).map(|_| ())
    }
}

fn main() {
    // Here the process is still on the node, with no container yet: the only moment the
    // node's cache folder can be opened (see `node_cache`).
    node_cache::open_on_node();
    SkiffShim::run(None);
}
