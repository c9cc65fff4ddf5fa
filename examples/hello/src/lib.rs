//! Hello, skiff: a `wasi:http` component that answers `GET /` with `hello` and
//! `GET /hello/<name>` with `hello, <name>`.
//!
//! It runs unchanged under `skiff up` and `wasmtime serve`: the only skiff-specific touch is
//! reading the `skiff-path-info` header (the part of the path after the matched route prefix)
//! when it is there, and falling back to parsing the path when it is not.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let body = match name(&request) {
            Some(name) if !name.is_empty() => format!("hello, {name}\n"),
            _ => "hello\n".to_string(),
        };
        respond(out, 200, body.as_bytes());
    }
}

/// The `<rest>` of `/hello/<rest>`, or `None` for `/`.
fn name(request: &IncomingRequest) -> Option<String> {
    // Under skiff, the host has already cut the matched route prefix off the path for us.
    let rest = match request.headers().get("skiff-path-info").into_iter().next() {
        Some(info) => String::from_utf8_lossy(&info).into_owned(),
        None => {
            let path = request.path_with_query().unwrap_or_default();
            let path = path.split('?').next().unwrap_or_default();
            path.strip_prefix("/hello")?.to_string()
        }
    };
    Some(rest.trim_start_matches('/').to_string())
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("outgoing body is taken once");
    ResponseOutparam::set(out, Ok(response));

    let stream = outgoing.write().expect("outgoing stream is taken once");
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for piece in body.chunks(4096) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return; // client went away; dropping the body unfinished says so
        }
    }
    drop(stream); // a child of `outgoing`: must go before `finish`
    let _ = OutgoingBody::finish(outgoing, None);
}
