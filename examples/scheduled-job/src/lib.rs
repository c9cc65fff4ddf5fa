//! A scheduled job and the route that reads its work. skiff POSTs `/jobs/tick` every five
//! seconds (see skiff.toml), marked `skiff-trigger: schedule`; the job counts its runs in the
//! key-value store `default` and keeps the last due time. `GET /` shows both. A client cannot
//! start the job: skiff removes any `skiff-*` header a client sends, so the trigger header is
//! proof that the scheduler sent the request. Standard WASI interfaces only.

mod bindings {
    wit_bindgen::generate!({
        path: "../../crates/skiff-runtime/wit",
        world: "skiff:host/state",
        generate_all,
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use bindings::wasi::logging::logging::{self, Level};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Job);

struct Job;

impl Guest for Job {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let headers = request.headers();
        let header = |name: &str| {
            headers.get(name).into_iter().next().map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let scheduled = header("skiff-trigger").as_deref() == Some("schedule");
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let (status, body) = match (path.as_str(), scheduled) {
            ("/jobs/tick" | "/jobs/nightly", true) => run_job(&path, &header("skiff-scheduled-time").unwrap_or_default()),
            (p, false) if p.starts_with("/jobs/") => (403, "jobs are started by the scheduler only\n".to_string()),
            _ => report(),
        };
        respond(out, status, &body);
    }
}

/// One run: counts it and keeps its due time.
fn run_job(path: &str, due: &str) -> (u16, String) {
    let result = store::open("default").and_then(|bucket| {
        let runs = atomics::increment(&bucket, &format!("runs:{path}"), 1)?;
        bucket.set(&format!("last:{path}"), due.as_bytes())?;
        Ok(runs)
    });
    match result {
        Ok(runs) => {
            logging::log(Level::Info, "scheduled-job", &format!("{path} run {runs}, due {due}"));
            (200, format!("run {runs}\n"))
        }
        // A failed run is recorded as such (skiff shows its status in `apps inspect`).
        Err(error) => (503, format!("the store failed: {error:?}\n")),
    }
}

/// What the job has done so far.
fn report() -> (u16, String) {
    let Ok(bucket) = store::open("default") else {
        return (503, "the store is unavailable\n".into());
    };
    let get = |key: &str| {
        bucket.get(key).ok().flatten().map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let runs = get("runs:/jobs/tick").unwrap_or_else(|| "0".into());
    let last = get("last:/jobs/tick").unwrap_or_else(|| "never".into());
    (200, format!("the tick job ran {runs} time(s); last due time {last}\n"))
}

fn respond(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body taken once");
    let stream = outgoing.write().expect("stream taken once");
    ResponseOutparam::set(out, Ok(response));
    let _ = stream.blocking_write_and_flush(body.as_bytes());
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
