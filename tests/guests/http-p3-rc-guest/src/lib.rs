//! A hello service against `wasi:http@0.3.0-rc-2025-09-16`, a release candidate of WASI 0.3
//! that no host links once 0.3.0 is out. skiff refuses it at load with the fix.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_future;

wasip3::http::proxy::export!(Service);

struct Service;

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
        drop(trailers_tx);
        let (response, _) = Response::new(Fields::new(), None, trailers);
        Ok(response)
    }
}
