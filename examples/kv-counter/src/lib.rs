//! Counts visits per path: each request increments the counter of its path in the key-value
//! store `default` (`wasi:keyvalue`), greets with the `greeting` variable (`wasi:config`), and
//! logs the visit (`wasi:logging`). Standard WASI interfaces only, so it runs on any host that
//! provides them.

mod bindings {
    wit_bindgen::generate!({
        path: "../../crates/skiff-runtime/wit",
        world: "skiff:host/state",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, store};
use bindings::wasi::logging::logging::{self, Level};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Counter);

struct Counter;

impl Guest for Counter {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let path = path.split('?').next().unwrap_or("/").to_string();
        let greeting = config::get("greeting").ok().flatten().unwrap_or_else(|| "Hello".into());
        let (status, body) = match store::open("default")
            .and_then(|bucket| atomics::increment(&bucket, &format!("visits:{path}"), 1))
        {
            Ok(visits) => {
                logging::log(Level::Info, "kv-counter", &format!("{path} visited {visits} times"));
                (200, format!("{greeting}! {path} has been visited {visits} time(s).\n"))
            }
            Err(error) => {
                logging::log(Level::Error, "kv-counter", &format!("store failed: {error:?}"));
                (503, "the counter store is unavailable; try again shortly\n".to_string())
            }
        };
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
}
