//! A native hyper server answering what `skiff up examples/hello` answers, byte for byte but
//! for the date: `200 OK`, `content-type: text/plain; charset=utf-8`, a chunked body
//! `hello\n` (or `hello, NAME\n` on `/hello/NAME`). `/sha256` answers the CPU-heavy guest's
//! work (`bench/guests/sha256/src/work.rs`, compiled natively here).
//!
//! The runtime is tokio's multi-threaded one with its default worker count, as skiff's is:
//! pinned to one CPU with `taskset`, both get one worker.
//!
//!     native-hello [ADDR]        (default 127.0.0.1:8080; prints `Serving http://ADDR`)

#[path = "../../guests/sha256/src/work.rs"]
mod work;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type Body =
    StreamBody<futures_util::stream::Once<std::future::Ready<Result<Frame<Bytes>, Infallible>>>>;

/// One data frame of unknown length up front: hyper sends it chunked, as skiff does for a
/// guest's streamed body.
fn chunked(text: String) -> Body {
    StreamBody::new(futures_util::stream::once(std::future::ready(Ok(
        Frame::data(Bytes::from(text)),
    ))))
}

async fn handle(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    let text = if path == "/sha256" {
        work::answer()
    } else {
        match path
            .strip_prefix("/hello")
            .map(|rest| rest.trim_start_matches('/'))
        {
            Some(name) if !name.is_empty() => format!("hello, {name}\n"),
            _ => "hello\n".to_string(),
        }
    };
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8")
        .body(chunked(text))
        .expect("a valid response"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()
        .expect("ADDR like 127.0.0.1:8080");
    let listener = TcpListener::bind(addr).await?;
    println!("Serving http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
