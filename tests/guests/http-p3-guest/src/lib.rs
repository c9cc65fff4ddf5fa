//! A `wasi:http` 0.3 service: the async handler export of WASIp3, as today's toolchains build it
//! (the `wasip3` crate on wit-bindgen's async support). What it does is chosen by the last path
//! segment, so one component serves every test of the host's 0.3 support:
//!
//! - `/hello`: a text answer, its body written by a task that outlives `handle`.
//! - `/echo`: the request's body stream and trailers handed back as the response's, unread
//!   (with its `content-type` and `trailer` headers).
//! - `/stream?N`: N chunks, 20 ms apart, each a line `chunk I`.
//! - `/env?NAME`: the value of the environment variable NAME, or 404.
//! - `/headers`: the request's method, path and headers, one per line.
//! - `/call?URL`: a GET of URL through `wasi:http/client.send`; answers with its status and body.
//! - `/sleep`: waits for an hour (a deadline test).
//! - `/spin`: computes for ever (an epoch deadline test).
//! - `/trap`: panics before answering.
//! - `/after-body-trap`: answers, writes a first part, then panics 100 ms later.
//! - `/grow?MIB`: allocates MIB mebibytes, then answers with the count.
//! - `/count`: how many requests this instance has served, this one included.
//! - `/linger?MS`: answers at once, then goes on working: MS milliseconds later it prints
//!   `lingered MS ms` to stdout (work after the response, as a guest that logs or reports
//!   once it has answered does).
//!
//! With `MODE=forward` in its environment it is a gateway middleware instead, whatever the
//! path: it sends the request on, unchanged (headers, body stream and all), with
//! `wasi:http/client.send`, and answers with the response it gets, its body stream handed
//! back unread and an `x-passed-p3: ID` header added, where ID is `$ID` (or `p3`).

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Service);

struct Service;

/// Requests this instance has served.
static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if std::env::var("MODE").is_ok_and(|mode| mode == "forward") {
            return forward(request).await;
        }
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query = query.to_string();
        match path.rsplit('/').next().unwrap_or_default() {
            "hello" => text(200, "hello from a WASI 0.3 component\n".into()),
            "echo" => echo(request),
            "stream" => Ok(stream(query.parse().unwrap_or(3))),
            "env" => match std::env::var(&query) {
                Ok(value) => text(200, format!("{value}\n")),
                Err(_) => text(404, format!("no variable {query}\n")),
            },
            "headers" => headers(&request),
            "call" => call(&query).await,
            "sleep" => {
                wasip3::clocks::monotonic_clock::wait_for(3_600_000_000_000).await;
                text(200, "woke up\n".into())
            }
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("asked to trap"),
            "after-body-trap" => {
                let (mut body, contents) = wit_stream::new();
                let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
                drop(trailers_tx);
                let (response, _) = Response::new(Fields::new(), Some(contents), trailers);
                wit_bindgen::spawn_local(async move {
                    body.write_all(b"the first part\n".to_vec()).await;
                    // Long enough for the host to have sent the head and the first part.
                    wasip3::clocks::monotonic_clock::wait_for(100_000_000).await;
                    panic!("asked to trap while writing the body");
                });
                Ok(response)
            }
            "grow" => {
                let mib: usize = query.parse().unwrap_or(1);
                let block = vec![1u8; mib << 20];
                text(200, format!("grew {} MiB\n", block.len() >> 20))
            }
            "count" => text(200, format!("{served}\n")),
            "linger" => {
                let ms: u64 = query.parse().unwrap_or(100);
                wit_bindgen::spawn_local(async move {
                    wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                    println!("lingered {ms} ms");
                });
                text(200, "answered\n".into())
            }
            _ => text(404, format!("no such mode: {path}\n")),
        }
    }
}

/// A response with `body` as its whole text, written after `handle` has returned.
fn text(status: u16, body: String) -> Result<Response, ErrorCode> {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .map_err(|_| ErrorCode::InternalError(Some("bad header".into())))?;
    let (mut writer, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _) = Response::new(headers, Some(contents), trailers);
    response
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some("bad status".into())))?;
    wit_bindgen::spawn_local(async move {
        writer.write_all(body.into_bytes()).await;
    });
    Ok(response)
}

/// The request's body and trailers, passed on as the response's without being read here.
fn echo(request: Request) -> Result<Response, ErrorCode> {
    let headers = Fields::new();
    // Its type, and which trailers will follow (HTTP/1.1 sends only those it declares).
    for name in ["content-type", "trailer"] {
        for value in request.get_headers().get(name) {
            let _ = headers.append(name, &value);
        }
    }
    let (done_tx, done) = wit_future::new(|| Ok(()));
    let (contents, trailers) = Request::consume_body(request, done);
    let (response, sent) = Response::new(headers, Some(contents), trailers);
    // What became of the response is what became of the request's body.
    wit_bindgen::spawn_local(async move {
        let _ = done_tx.write(sent.await).await;
    });
    Ok(response)
}

fn stream(chunks: u32) -> Response {
    let (mut writer, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _) = Response::new(Fields::new(), Some(contents), trailers);
    wit_bindgen::spawn_local(async move {
        for i in 0..chunks {
            if i > 0 {
                wasip3::clocks::monotonic_clock::wait_for(20_000_000).await;
            }
            let left = writer.write_all(format!("chunk {i}\n").into_bytes()).await;
            if !left.is_empty() {
                return; // the reader went away
            }
        }
    });
    response
}

fn headers(request: &Request) -> Result<Response, ErrorCode> {
    let method = match request.get_method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(other) => other,
    };
    let mut text_body = format!(
        "{method} {}\n",
        request.get_path_with_query().unwrap_or_default()
    );
    for (name, value) in request.get_headers().copy_all() {
        text_body.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
    }
    text(200, text_body)
}

/// GET `url` through the host's client, then answer with what came back.
async fn call(url: &str) -> Result<Response, ErrorCode> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return text(400, format!("not a URL: {url}\n"));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (outgoing, _) = Request::new(Fields::new(), None, trailers, None);
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.into()),
    };
    let bad = |what: &str| ErrorCode::InternalError(Some(format!("bad {what}")));
    outgoing.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| bad("authority"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| bad("path"))?;
    let response = match wasip3::http::client::send(outgoing).await {
        Ok(response) => response,
        Err(code) => return text(502, format!("call failed: {code:?}\n")),
    };
    let status = response.get_status_code();
    let (done_tx, done) = wit_future::new(|| Ok(()));
    let (mut contents, _trailers) = Response::consume_body(response, done);
    let mut body = Vec::new();
    loop {
        let (result, chunk) = contents.read(Vec::with_capacity(16 << 10)).await;
        body.extend_from_slice(&chunk);
        if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
            break;
        }
    }
    drop(done_tx);
    text(200, format!("got {status}: {}", String::from_utf8_lossy(&body)))
}

/// A middleware's hop: the request on as it came, the response back with one header more.
/// Neither body passes through this guest's memory: each stream is handed on.
async fn forward(request: Request) -> Result<Response, ErrorCode> {
    let response = wasip3::http::client::send(request).await?;
    let status = response.get_status_code();
    let headers = response.get_headers().clone();
    let id = std::env::var("ID").unwrap_or_else(|_| "p3".into());
    let _ = headers.append("x-passed-p3", id.as_bytes());
    let (done_tx, done) = wit_future::new(|| Ok(()));
    let (contents, trailers) = Response::consume_body(response, done);
    let (answer, sent) = Response::new(headers, Some(contents), trailers);
    answer
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some("bad status".into())))?;
    wit_bindgen::spawn_local(async move {
        let _ = done_tx.write(sent.await).await;
    });
    Ok(answer)
}
