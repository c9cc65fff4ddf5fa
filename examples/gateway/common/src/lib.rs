//! The plumbing both middleware components share, all plain `wasi:http` (nothing in it is
//! skiff-specific):
//!
//! - [`send_on`]: sends the incoming request on to the next hop, the way a middleware does: an
//!   outgoing request to the same scheme and authority it received the request at, same method
//!   and path, the body streamed after it. Skiff hands that request to the next middleware of
//!   the route or to the route's target, in process; on another host it would be an ordinary
//!   request to the same origin.
//! - [`relay`]: streams the next hop's answer back to the client, with headers added.
//! - [`respond`] and [`json_error`]: small answers of the middleware's own (401, 429, 5xx).
//! - [`variable`]: the component's variables, through `wasi:config/store`.
//!
//! Bodies are streamed both ways, never held whole in guest memory.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../crates/skiff-runtime/wit",
        world: "skiff:host/config",
        generate_all,
    });
}

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody,
    OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

/// How much one `blocking-read` may return: few host calls, yet a big body never sits in
/// guest memory.
const READ_CHUNK: u64 = 64 * 1024;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call (wasi:io/streams contract).
const WRITE_CHUNK: usize = 4096;

// ---- variables ----------------------------------------------------------------------------

/// The component variable `name` (`[component.ID] variables = { name = "..." }`): `Ok(None)`
/// when it is not set or empty, `Err` when the host cannot say.
pub fn variable(name: &str) -> Result<Option<String>, String> {
    match bindings::wasi::config::store::get(name) {
        Ok(Some(value)) if !value.trim().is_empty() => Ok(Some(value)),
        Ok(_) => Ok(None),
        Err(error) => Err(format!("cannot read variable `{name}`: {error:?}")),
    }
}

/// A whole-number variable, `default` when unset; `Err` (a misconfiguration) when it is set to
/// something else than a number in `min..=max`.
pub fn number_variable(name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    let Some(text) = variable(name)? else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "variable `{name}` is {text:?}: expected a whole number from {min} to {max}"
        )),
    }
}

/// Seconds since the Unix epoch, by the host's wall clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- headers ------------------------------------------------------------------------------

/// Every value of header `name`.
pub fn header_values(headers: &Fields, name: &str) -> Vec<Vec<u8>> {
    headers.get(name)
}

/// The value of header `name` when it is present exactly once and is UTF-8 text; `None`
/// otherwise (absent, repeated, or not text). A header a decision depends on must not be
/// ambiguous.
pub fn single_header(headers: &Fields, name: &str) -> Option<String> {
    let mut values = headers.get(name).into_iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    String::from_utf8(first).ok()
}

/// The headers worth passing on, less those named in `drop` (lowercase): all but `host` and
/// the hop-by-hop ones, which describe one connection only (and which the host refuses in
/// guest-made headers).
pub fn copy_headers(from: &Fields, drop: &[&str]) -> Fields {
    let to = Fields::new();
    for (name, value) in from.entries() {
        let lower = name.to_ascii_lowercase();
        if !is_hop_by_hop(&lower) && !drop.contains(&lower.as_str()) {
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

// ---- sending on ---------------------------------------------------------------------------

/// Why a request could not be sent on.
#[derive(Debug)]
pub enum Failure {
    /// The host's answer to the call (connection refused, timeout, ...): a 502.
    Code(ErrorCode),
    /// Ours: a request we could not even build: a 500.
    Local(&'static str),
}

/// Sends `request` on to the next hop with `headers` instead of its own, its body streamed
/// after it, and waits for the response head.
pub fn send_on(request: IncomingRequest, headers: Fields) -> Result<IncomingResponse, Failure> {
    let authority = request
        .authority()
        .ok_or(Failure::Local("the request has no authority"))?;
    let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let scheme = request.scheme().unwrap_or(Scheme::Http);

    let outgoing = OutgoingRequest::new(headers);
    outgoing
        .set_method(&request.method())
        .map_err(|()| Failure::Local("cannot set the outgoing method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| Failure::Local("cannot set the outgoing scheme"))?;
    outgoing
        .set_authority(Some(&authority))
        .map_err(|()| Failure::Local("cannot set the outgoing authority"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| Failure::Local("cannot set the outgoing path"))?;
    let body = outgoing
        .body()
        .map_err(|()| Failure::Local("cannot open the outgoing body"))?;

    // The call first, then the body: the next hop reads the body while it runs, so a body
    // larger than the host's buffer does not block us forever.
    let future = outgoing_handler::handle(outgoing, None).map_err(Failure::Code)?;
    match request.consume() {
        // Fails when fewer or more bytes came than `content-length` promised.
        Ok(incoming) => send_body(incoming, body).map_err(Failure::Code)?,
        Err(()) => drop(body),
    }
    future.subscribe().block();
    match future.get() {
        Some(Ok(result)) => result.map_err(Failure::Code),
        Some(Err(())) | None => Err(Failure::Local("the response was lost")),
    }
}

/// Answers a failure to send on: 502 when the next hop could not answer, 500 for our own.
pub fn answer_failure(out: ResponseOutparam, component: &str, failure: Failure) {
    match failure {
        Failure::Code(code) => {
            eprintln!("{component}: next hop failed: {code:?}");
            json_error(
                out,
                502,
                &[],
                "bad_gateway",
                "the service behind the gateway failed",
            );
        }
        Failure::Local(why) => {
            eprintln!("{component}: {why}");
            json_error(out, 500, &[], "internal_error", why);
        }
    }
}

/// Streams the next hop's answer back to the client: its status, headers (with `extra` set,
/// replacing any of the same name) and body.
pub fn relay(out: ResponseOutparam, response: IncomingResponse, extra: &[(&str, String)]) {
    let headers = copy_headers(&response.headers(), &[]);
    for (name, value) in extra {
        let _ = headers.set(name, &[value.clone().into_bytes()]);
    }
    let Some((body, stream)) = start_response(out, response.status(), headers) else {
        return;
    };
    let Ok(incoming) = response.consume() else {
        return; // dropping the body unfinished tells the host the response is incomplete
    };
    if pump(incoming, &stream).is_ok() {
        finish(body, stream);
    }
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
/// outgoing body is dropped unfinished, so the next hop sees it cut short.
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

// ---- responses ----------------------------------------------------------------------------

/// A complete small response with `headers` and a body of `content_type`.
pub fn respond(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, String)],
    content_type: &str,
    body: &[u8],
) {
    let fields = Fields::new();
    let _ = fields.set("content-type", &[content_type.as_bytes().to_vec()]);
    for (name, value) in headers {
        let _ = fields.set(name, &[value.clone().into_bytes()]);
    }
    if let Some((outgoing, stream)) = start_response(out, status, fields)
        && write_all(&stream, body).is_ok()
    {
        finish(outgoing, stream);
    }
}

/// A JSON error answer: `{"error": error, "error_description": description}`.
pub fn json_error(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, String)],
    error: &str,
    description: &str,
) {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut text = body.to_string();
    text.push('\n');
    respond(out, status, headers, "application/json", text.as_bytes());
}

/// Sends the status and headers to the host and hands back the body to stream into; `None`
/// only if the host refused the response (then it answers 500 itself).
fn start_response(
    out: ResponseOutparam,
    status: u16,
    headers: Fields,
) -> Option<(OutgoingBody, OutputStream)> {
    let response = OutgoingResponse::new(headers);
    // Only fails for codes outside 100..=999; fall back to 502 rather than trap.
    if response.set_status_code(status).is_err() {
        let _ = response.set_status_code(502);
    }
    let body = response.body().ok()?;
    let stream = body.write().ok()?;
    ResponseOutparam::set(out, Ok(response));
    Some((body, stream))
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
