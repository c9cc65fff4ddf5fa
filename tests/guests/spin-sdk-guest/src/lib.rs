//! Spin's `http-rust` template, as it is: spin-sdk 7's `#[http_service]` exports
//! `wasi:http/handler@0.3.0`.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// A simple Spin HTTP component.
#[http_service]
async fn hello_world(_req: Request) -> impl IntoResponse {
    "Hello, Spin"
}
