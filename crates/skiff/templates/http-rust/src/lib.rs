//! {{app-name}}: a `wasi:http` component. skiff runs it in a fresh sandbox for every request;
//! it reaches no file, host or variable that skiff.toml does not grant.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(App);

struct App;

impl Guest for App {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".into());
        let method = request.method();
        let method = match &method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(other) => other,
        };
        let body = format!("Hello from {{app-name}}! You asked for {method} {path}\n");
        respond(out, 200, body.as_bytes());
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let Ok(stream) = outgoing.write() else {
        return;
    };
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for piece in body.chunks(4096) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return; // the client went away
        }
    }
    drop(stream); // a child of `outgoing`: it goes first
    let _ = OutgoingBody::finish(outgoing, None);
}
