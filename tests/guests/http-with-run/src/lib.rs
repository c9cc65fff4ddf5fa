//! A component that exports both `wasi:http/incoming-handler` and `wasi:cli/run`, so the host
//! can be tested on a component that fits both triggers: each export must be callable on its own.
//!
//! The `wasip2` crate generates one `export!` macro per world; invoking both in one cdylib
//! merges the two worlds' exports into a single component.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Both);
wasip2::cli::command::export!(Both);

struct Both;

impl wasip2::exports::http::incoming_handler::Guest for Both {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("outgoing body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("outgoing stream is taken once");
        // Short enough for one `blocking-write-and-flush` (at most 4096 bytes).
        if stream
            .blocking_write_and_flush(b"http export works")
            .is_ok()
        {
            drop(stream); // a child of `body`: must go before `finish`
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

impl wasip2::exports::cli::run::Guest for Both {
    fn run() -> Result<(), ()> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "run export works").map_err(|_| ())?;
        stdout.flush().map_err(|_| ())
    }
}
