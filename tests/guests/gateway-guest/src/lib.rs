//! A `wasi:http/proxy` component for the host's tests of middleware chains, upstream routes and
//! in-process component calls. One `.wasm` plays every role: the env var `MODE` (set per
//! component in the manifest) picks it. `ID` below is the request's `skiff-component` header,
//! set by the host (`gateway-guest` without it).
//!
//! | `MODE`              | behaviour                                                          |
//! |---------------------|--------------------------------------------------------------------|
//! | `forward` (default) | pass-through middleware: sends the request on (see below), answers |
//! |                     | with the next hop's status, headers and body, plus `x-passed-ID: yes`; |
//! |                     | 502 `ID: next hop failed: {code:?}` when the call fails            |
//! | `auth`              | `forward` if `authorization: Bearer letmein`, else 401 `ID: denied` |
//! |                     | with `www-authenticate: Bearer`                                    |
//! | `rewrite`           | `forward` to `/rewritten` + the path, with `x-rewritten-by: ID`; on   |
//! |                     | the way back 200 becomes 203 and `x-response-rewritten: ID` is added |
//! | `short`             | 200 `short-circuit by ID` with `x-cache: hit`, calling nothing     |
//! | `trap`              | panics (a trap)                                                     |
//! | `sleep`             | waits `SLEEP_MS` ms (default 60000) on the host's clock, then `forward` |
//! | `echo`              | the terminal component: 200 with `echo ID`, `method=…`, `path=…`,  |
//! |                     | `NAME=VALUE` for each of [`ECHOED`] present, and `body=…`, one a line |
//! | `call`              | sends the request on like `forward` (`TARGET` required), answers 200 |
//! |                     | `ID got N: ` + the response body; 502 `ID: call failed: {code:?}`  |
//! | anything else       | 500 `ID: unknown MODE …`                                           |
//!
//! Sending on: same method and path; scheme and authority of the incoming request (as a
//! middleware reaches its next hop), or of `TARGET` when set (`http://back.skiff.internal`,
//! whose path, if any, is put before the incoming one). Headers are copied but for `host` and
//! the hop-by-hop ones, and `ID` is appended to `x-seen-by` (`a` becomes `a,ID`).
//!
//! Bodies are streamed both ways, never buffered whole, except where a mode answers with one
//! (`echo`, `call`).

use std::fmt::Write as _;

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody,
    OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

wasip2::http::proxy::export!(GatewayGuest);

struct GatewayGuest;

/// How much one `blocking-read` may return: few host calls, yet a big body never sits in
/// guest memory.
const READ_CHUNK: u64 = 64 * 1024;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call (wasi:io/streams contract).
const WRITE_CHUNK: usize = 4096;

/// The request headers `echo` reports, in this order, when present.
const ECHOED: &[&str] = &[
    "x-seen-by",
    "x-rewritten-by",
    "skiff-caller",
    "skiff-component",
    "skiff-matched-route",
    "skiff-path-info",
    "traceparent",
    "authorization",
];

impl Guest for GatewayGuest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let id = header(&request.headers(), "skiff-component")
            .unwrap_or_else(|| "gateway-guest".to_string());
        let mode = std::env::var("MODE").unwrap_or_else(|_| "forward".to_string());

        match mode.as_str() {
            "forward" => forward(&id, request, out, false),
            "auth" => {
                let token = header(&request.headers(), "authorization");
                if token.as_deref().map(str::trim) == Some("Bearer letmein") {
                    forward(&id, request, out, false);
                } else {
                    let headers = text_headers();
                    let _ = headers.set("www-authenticate", &[b"Bearer".to_vec()]);
                    respond_with(out, 401, headers, format!("{id}: denied\n").as_bytes());
                }
            }
            "rewrite" => forward(&id, request, out, true),
            "short" => {
                let headers = text_headers();
                let _ = headers.set("x-cache", &[b"hit".to_vec()]);
                respond_with(
                    out,
                    200,
                    headers,
                    format!("short-circuit by {id}\n").as_bytes(),
                );
            }
            "trap" => panic!("{id}: MODE=trap"),
            "sleep" => {
                let ms = std::env::var("SLEEP_MS")
                    .ok()
                    .and_then(|ms| ms.trim().parse::<u64>().ok())
                    .unwrap_or(60_000);
                // A host-side wait, not a busy loop: what a slow middleware looks like.
                wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000))
                    .block();
                forward(&id, request, out, false);
            }
            "echo" => echo(&id, request, out),
            "call" => call(&id, request, out),
            other => respond(
                out,
                500,
                format!("{id}: unknown MODE {other:?}\n").as_bytes(),
            ),
        }
    }
}

/// `forward` and `rewrite`: send the request on, relay the answer with our marks on it.
fn forward(id: &str, request: IncomingRequest, out: ResponseOutparam, rewrite: bool) {
    let response = match send_on(id, request, rewrite) {
        Ok(response) => response,
        Err(Failure::Code(code)) => {
            let text = format!("{id}: next hop failed: {code:?}\n");
            return respond(out, 502, text.as_bytes());
        }
        Err(Failure::Local(why)) => return respond(out, 500, format!("{id}: {why}\n").as_bytes()),
    };

    let mut status = response.status();
    let headers = copy_headers(&response.headers());
    // Only fails for a name that is no valid token, which a test's component id is.
    let _ = headers.append(&format!("x-passed-{id}"), b"yes");
    if rewrite {
        if status == 200 {
            status = 203;
        }
        let _ = headers.append("x-response-rewritten", id.as_bytes());
    }

    let (body, stream) = start_response(out, status, headers);
    let Ok(incoming) = response.consume() else {
        return; // dropping the body unfinished tells the host the response is incomplete
    };
    if pump(incoming, &stream).is_ok() {
        finish(body, stream);
    }
}

/// `call`: send the request on to `TARGET`, answer with what came back as text.
fn call(id: &str, request: IncomingRequest, out: ResponseOutparam) {
    if std::env::var("TARGET").is_err() {
        return respond(
            out,
            500,
            format!("{id}: MODE=call needs TARGET\n").as_bytes(),
        );
    }
    let response = match send_on(id, request, false) {
        Ok(response) => response,
        Err(Failure::Code(code)) => {
            return respond(
                out,
                502,
                format!("{id}: call failed: {code:?}\n").as_bytes(),
            );
        }
        Err(Failure::Local(why)) => return respond(out, 500, format!("{id}: {why}\n").as_bytes()),
    };
    let status = response.status();
    match response.consume().map_err(|()| None).and_then(read_all) {
        Ok(body) => {
            let mut text = format!("{id} got {status}: ").into_bytes();
            text.extend_from_slice(&body);
            respond(out, 200, &text);
        }
        Err(code) => {
            let text = format!("{id}: call failed reading the body: {code:?}\n");
            respond(out, 502, text.as_bytes());
        }
    }
}

/// `echo`: what arrived, one fact a line, the body last.
fn echo(id: &str, request: IncomingRequest, out: ResponseOutparam) {
    let headers = request.headers();
    let mut text = format!(
        "echo {id}\nmethod={}\npath={}\n",
        method_name(&request.method()),
        request.path_with_query().unwrap_or_default(),
    );
    for name in ECHOED {
        if let Some(value) = header(&headers, name) {
            let _ = writeln!(text, "{name}={value}");
        }
    }
    drop(headers);

    let body = match request.consume().map_err(|()| None).and_then(read_all) {
        Ok(body) => body,
        Err(code) => {
            let text = format!("{id}: cannot read the request body: {code:?}\n");
            return respond(out, 400, text.as_bytes());
        }
    };
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"body=");
    bytes.extend_from_slice(&body);
    bytes.push(b'\n');
    respond(out, 200, &bytes);
}

// ---- sending on ---------------------------------------------------------------------------

/// Why a request could not be sent on.
enum Failure {
    /// The host's answer to the call: denied, loop detected, connection refused, ...
    Code(ErrorCode),
    /// Ours: a request we could not even build (answered with 500).
    Local(String),
}

/// Sends the request on (see the module doc) with its body streamed after it, and waits for
/// the response head. `rewrite` puts `/rewritten` before the path and adds `x-rewritten-by`.
fn send_on(id: &str, request: IncomingRequest, rewrite: bool) -> Result<IncomingResponse, Failure> {
    let incoming_headers = request.headers();
    let headers = copy_headers(&incoming_headers);
    let seen_by: Vec<String> = incoming_headers
        .get("x-seen-by")
        .iter()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .chain([id.to_string()])
        .collect();
    drop(incoming_headers);
    let _ = headers.set("x-seen-by", &[seen_by.join(",").into_bytes()]);
    if rewrite {
        let _ = headers.set("x-rewritten-by", &[id.as_bytes().to_vec()]);
    }

    let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let path = if rewrite {
        format!("/rewritten{path}")
    } else {
        path
    };
    let (scheme, authority, path) = match std::env::var("TARGET") {
        Ok(target) => {
            let (scheme, rest) = target
                .split_once("://")
                .ok_or_else(|| Failure::Local(format!("TARGET {target:?} has no scheme")))?;
            let (authority, prefix) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let scheme = match scheme {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => Scheme::Other(other.to_string()),
            };
            let path = format!("{}{path}", prefix.trim_end_matches('/'));
            (scheme, authority.to_string(), path)
        }
        Err(_) => {
            let authority = request
                .authority()
                .ok_or_else(|| Failure::Local("the request has no authority".to_string()))?;
            (request.scheme().unwrap_or(Scheme::Http), authority, path)
        }
    };

    let outgoing = OutgoingRequest::new(headers);
    let local = |what: &str| Failure::Local(format!("cannot set the outgoing {what}"));
    outgoing
        .set_method(&request.method())
        .map_err(|()| local("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| local("scheme"))?;
    outgoing
        .set_authority(Some(&authority))
        .map_err(|()| local("authority"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| local("path"))?;
    let body = outgoing.body().map_err(|()| local("body"))?;

    // The call first, then the body: the host reads the body while the next hop runs, so a
    // body larger than the host's buffer does not block us forever.
    let future = outgoing_handler::handle(outgoing, None).map_err(Failure::Code)?;
    match request.consume() {
        // Fails when fewer or more bytes came than `content-length` promised.
        Ok(incoming) => send_body(incoming, body).map_err(Failure::Code)?,
        Err(()) => drop(body), // taken already: none to send, and none to wait for
    }

    future.subscribe().block();
    match future.get() {
        Some(Ok(result)) => result.map_err(Failure::Code),
        Some(Err(())) | None => Err(Failure::Local("the response was lost".to_string())),
    }
}

/// The headers worth passing on: all but `host` and the hop-by-hop ones, which describe one
/// connection only (and which the host refuses in guest-made headers).
fn copy_headers(from: &Fields) -> Fields {
    let to = Fields::new();
    for (name, value) in from.entries() {
        if !is_hop_by_hop(&name.to_ascii_lowercase()) {
            // Fails only for a header the host forbids guests to set: then it is not passed on.
            let _ = to.append(&name, &value);
        }
    }
    to
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "te"
            | "trailer"
    ) || name.starts_with("proxy-")
}

// ---- bodies -------------------------------------------------------------------------------

/// Streams a body into `to` as it arrives. `Err` when reading or writing broke off.
fn pump(from: IncomingBody, to: &OutputStream) -> Result<(), StreamError> {
    // `input` is a child of `from`: as a local it is dropped before the parameter.
    let input = from.stream().map_err(|()| StreamError::Closed)?;
    loop {
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => write_all(to, &chunk)?,
            Err(StreamError::Closed) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

/// Streams a request body into an outgoing one and finishes it. When the copy breaks off, the
/// outgoing body is dropped unfinished, so the next hop sees it cut short (or had stopped
/// reading, having answered early); its answer, or the error, comes with the response. Both
/// bodies are gone when this returns: nothing keeps the next hop waiting for more.
fn send_body(from: IncomingBody, to: OutgoingBody) -> Result<(), ErrorCode> {
    let Ok(stream) = to.write() else {
        return Ok(());
    };
    if pump(from, &stream).is_ok() {
        drop(stream);
        OutgoingBody::finish(to, None)?;
    }
    Ok(())
}

/// A whole (small) body. `Err` carries the host's error code when it gives one.
fn read_all(from: IncomingBody) -> Result<Vec<u8>, Option<ErrorCode>> {
    let input = from.stream().map_err(|()| None)?;
    let mut bytes = Vec::new();
    loop {
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(wasip2::http::types::http_error_code(&error));
            }
        }
    }
}

// ---- responses ----------------------------------------------------------------------------

/// A complete small `text/plain` response.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    respond_with(out, status, text_headers(), body);
}

fn respond_with(out: ResponseOutparam, status: u16, headers: Fields, body: &[u8]) {
    let (outgoing, stream) = start_response(out, status, headers);
    if write_all(&stream, body).is_ok() {
        finish(outgoing, stream);
    }
}

/// Sends the status and headers to the host and hands back the body to stream into.
fn start_response(
    out: ResponseOutparam,
    status: u16,
    headers: Fields,
) -> (OutgoingBody, OutputStream) {
    let response = OutgoingResponse::new(headers);
    // Only fails for codes outside 100..=999; fall back to 500 rather than trap.
    if response.set_status_code(status).is_err() {
        let _ = response.set_status_code(500);
    }
    let body = response.body().expect("outgoing body is taken once");
    let stream = body.write().expect("outgoing stream is taken once");
    ResponseOutparam::set(out, Ok(response));
    (body, stream)
}

/// Ends the body cleanly. The stream must be dropped first: it is a child of the body.
fn finish(body: OutgoingBody, stream: OutputStream) {
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// Writes in pieces of at most 4096 bytes, the most one `blocking-write-and-flush` takes; the
/// host call waits for capacity itself, which gives back-pressure.
fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<(), StreamError> {
    for piece in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(piece)?;
    }
    Ok(())
}

fn text_headers() -> Fields {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    headers
}

/// The first value of a header, as text (lossy: these are test headers).
fn header(headers: &Fields, name: &str) -> Option<String> {
    headers
        .get(name)
        .into_iter()
        .next()
        .map(|value| String::from_utf8_lossy(&value).into_owned())
}

fn method_name(method: &wasip2::http::types::Method) -> &str {
    use wasip2::http::types::Method;
    match method {
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
    }
}
