//! The CPU-heavy benchmark guest: every request is answered with the sha256 of 1 MiB (see
//! `work.rs`, compiled natively by bench/native-hello too). Built like examples/hello, with
//! the `wasip2` bindings.

mod work;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Sha256);

struct Sha256;

impl Guest for Sha256 {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let body = work::answer();
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(200);
        let outgoing = response.body().expect("outgoing body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = outgoing.write().expect("outgoing stream is taken once");
        let _ = stream.blocking_write_and_flush(body.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
