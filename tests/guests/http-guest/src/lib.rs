//! A `wasi:http/proxy` component for the host's HTTP tests: one short handler per scenario,
//! picked by the request path.
//!
//! | path              | response                                                              |
//! |-------------------|-----------------------------------------------------------------------|
//! | `/echo`           | status 200 or `x-echo-status`; `x-*` and `content-type` headers copied |
//! |                   | back; the request body streamed back chunk by chunk                   |
//! | `/count`          | a per-instance counter, incremented per request (`1` on a fresh one)  |
//! | `/big?n=BYTES`    | BYTES bytes of `x`, streamed in 64 KiB pieces                         |
//! | `/log`            | writes one line to stdout and one to stderr, answers `logged`         |
//! | `/env/NAME`       | the value of env var NAME, or 404 `unset`                             |
//! | `/file?path=P`    | the contents of file P, or 500 with the I/O error                     |
//! | `/write?path=P`   | writes `written` to file P: 200, or 500 with the I/O error            |
//! | `/symlink?target=T&path=P` | replaces P with a symlink to T (as written): 200, or 500 and why |
//! | `/remove?path=P`  | removes file or folder P (and all below it): 200, or 500 and why      |
//! | `/fetch?url=U`    | GETs U through `wasi:http/outgoing-handler`: `status=N`, or 502 with |
//! |                   | the error code (e.g. `HttpRequestDenied`)                             |
//! | `/alloc?mib=N`    | allocates and touches N MiB, answers `allocated` (or traps trying)    |
//! | `/recurse?depth=N`| recurses N frames deep (a huge N overflows the stack and traps)     |
//! | `/sleep?ms=N`     | waits N milliseconds on the host's clock, then answers `slept`        |
//! | `/spin?n=N`       | N rounds of pure computation (forever without `n`), answers the result |
//! | `/hog`            | allocates 1 MiB after 1 MiB, touching each, until allocation fails    |
//! | `/panic`          | panics (a Rust panic is a trap in Wasm)                               |
//! | `/hold`           | sends a 200 head and one line, then keeps the body open forever       |
//! | anything else     | `component=… method=… path=… matched=… info=…\n` describing the call  |
//!
//! Under skiff the handler is picked by `skiff-path-info` (the path below the matched route)
//! when it is set, so the handlers work whatever route prefix the component is mounted at.
//!
//! Bodies are never buffered whole: `/echo` and `/big` must work for 100 MiB with a small heap.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::{OutputStream, StreamError};

wasip2::http::proxy::export!(HttpGuest);

struct HttpGuest;

/// How much one `blocking-read` may return. Large enough to keep the number of host calls
/// low, small enough that a 100 MiB body never sits in guest memory.
const READ_CHUNK: u64 = 64 * 1024;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call (wasi:io/streams contract).
const WRITE_CHUNK: usize = 4096;

/// Lives in linear memory, so it survives only as long as the instance: a host that gives
/// every request a fresh instance always answers `1` on `/count`.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Guest for HttpGuest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_with_query.as_str(), ""),
        };

        // Under skiff, dispatch on the path below the matched route, so the same handlers
        // answer whichever route prefix a test mounts this component at.
        let path_info = header(&request.headers(), "skiff-path-info").filter(|p| !p.is_empty());
        let path = path_info.as_deref().unwrap_or(path);

        match path {
            "/echo" => echo(request, out),
            "/count" => {
                let n = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
                respond(out, 200, n.to_string().as_bytes());
            }
            "/big" => match query_param(query, "n").and_then(|n| n.parse::<u64>().ok()) {
                Some(n) => big(out, n),
                None => respond(out, 400, b"expected /big?n=BYTES"),
            },
            "/log" => {
                println!("hello stdout from http-guest");
                eprintln!("hello stderr from http-guest");
                respond(out, 200, b"logged");
            }
            "/file" => match query_param(query, "path") {
                Some(file) => match std::fs::read(&file) {
                    Ok(contents) => respond(out, 200, &contents),
                    Err(e) => {
                        eprintln!("cannot read {file}: {e}");
                        respond(out, 500, e.to_string().as_bytes())
                    }
                },
                None => respond(out, 400, b"expected /file?path=P"),
            },
            "/write" => match query_param(query, "path") {
                Some(file) => match std::fs::write(&file, b"written") {
                    Ok(()) => respond(out, 200, b"written"),
                    Err(e) => respond(out, 500, e.to_string().as_bytes()),
                },
                None => respond(out, 400, b"expected /write?path=P"),
            },
            // What a hostile guest does in a writable folder: replace a subfolder with a link
            // that points out of it, and hope the host follows it later.
            "/symlink" => match (query_param(query, "target"), query_param(query, "path")) {
                (Some(target), Some(link)) => {
                    let _ = std::fs::remove_file(&link);
                    match symlink(&target, &link) {
                        Ok(()) => respond(out, 200, b"linked"),
                        Err(e) => respond(out, 500, e.as_bytes()),
                    }
                }
                _ => respond(out, 400, b"expected /symlink?target=T&path=P"),
            },
            "/remove" => match query_param(query, "path") {
                Some(path) => {
                    let removed = if std::path::Path::new(&path).is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    match removed {
                        Ok(()) => respond(out, 200, b"removed"),
                        Err(e) => respond(out, 500, e.to_string().as_bytes()),
                    }
                }
                None => respond(out, 400, b"expected /remove?path=P"),
            },
            "/fetch" => match query_param(query, "url") {
                Some(url) => match fetch(&url) {
                    Ok(status) => respond(out, 200, format!("status={status}").as_bytes()),
                    Err(error) => respond(out, 502, error.as_bytes()),
                },
                None => respond(out, 400, b"expected /fetch?url=U"),
            },
            "/alloc" => match query_param(query, "mib").and_then(|n| n.parse::<usize>().ok()) {
                Some(mib) => {
                    // Touch every page so the memory is really used, not only reserved.
                    let block = vec![1u8; mib << 20];
                    let sum: u64 = block.iter().step_by(4096).map(|&b| u64::from(b)).sum();
                    respond(out, 200, format!("allocated {sum} pages").as_bytes());
                }
                None => respond(out, 400, b"expected /alloc?mib=N"),
            },
            "/recurse" => match query_param(query, "depth").and_then(|n| n.parse::<u64>().ok()) {
                Some(depth) => {
                    let frames = recurse(depth);
                    respond(out, 200, format!("recursed {frames}").as_bytes());
                }
                None => respond(out, 400, b"expected /recurse?depth=N"),
            },
            "/spin" => {
                let rounds = query_param(query, "n").and_then(|n| n.parse::<u64>().ok());
                let result = spin(rounds.unwrap_or(u64::MAX));
                respond(out, 200, format!("spun {result}").as_bytes());
            }
            "/hog" => {
                let mut held: Vec<Vec<u8>> = Vec::new();
                loop {
                    // `vec!` aborts the instance when the allocator can get no more memory.
                    held.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&held);
                }
            }
            "/panic" => panic!("the http-guest was asked to panic"),
            "/hold" => {
                let (_body, stream) = start_response(out, 200, text_headers());
                let _ = write_all(&stream, b"holding\n");
                loop {
                    wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
                }
            }
            "/sleep" => match query_param(query, "ms").and_then(|ms| ms.parse::<u64>().ok()) {
                Some(ms) => {
                    // A host-side wait (not a busy loop): what a slow upstream call looks like.
                    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                    respond(out, 200, b"slept");
                }
                None => respond(out, 400, b"expected /sleep?ms=N"),
            },
            _ => match path.strip_prefix("/env/") {
                Some(name) => match std::env::var(name) {
                    Ok(value) => respond(out, 200, value.as_bytes()),
                    Err(_) => respond(out, 404, b"unset"),
                },
                None => describe(&request, &path_with_query, out),
            },
        }
    }
}

/// `/spin`: a loop of pure arithmetic with no host calls: what a guest stuck in `loop {}`
/// looks like to the host, but with a result so the optimiser cannot remove it.
fn spin(rounds: u64) -> u64 {
    let mut x: u64 = 1;
    let mut i = 0;
    while i < rounds {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        i += 1;
    }
    x
}

/// `/echo`: headers first, then the body streamed back as it arrives. The response is sent
/// before the request body is read, so the client sees the echo start while still uploading.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let request_headers = request.headers();
    let status = match header(&request_headers, "x-echo-status") {
        None => 200,
        Some(value) => match value.trim().parse::<u16>() {
            Ok(status) => status,
            Err(_) => return respond(out, 400, b"x-echo-status must be a status code"),
        },
    };

    let headers = Fields::new();
    for (name, value) in request_headers.entries() {
        let name_lower = name.to_ascii_lowercase();
        if name_lower.starts_with("x-") || name_lower == "content-type" {
            // Only fails for forbidden or malformed names, which `x-*` and content-type are not.
            let _ = headers.append(&name, &value);
        }
    }
    drop(request_headers);

    let (body, stream) = start_response(out, status, headers);
    let Ok(incoming) = request.consume() else {
        return;
    };
    let Ok(input) = incoming.stream() else { return };
    loop {
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if write_all(&stream, &chunk).is_err() {
                    return; // client went away: drop the body unfinished
                }
            }
            Err(StreamError::Closed) => break,
            // Dropping the body without `finish` tells the host the response is incomplete.
            Err(StreamError::LastOperationFailed(_)) => return,
        }
    }
    // The stream is a child of the body resource: it must go before the body is finished.
    drop(input);
    drop(incoming);
    finish(body, stream);
}

/// `/big`: `n` bytes of `x` from one reused 64 KiB buffer.
fn big(out: ResponseOutparam, n: u64) {
    let piece = vec![b'x'; READ_CHUNK as usize];
    let (body, stream) = start_response(out, 200, text_headers());
    let mut left = n;
    while left > 0 {
        let len = left.min(piece.len() as u64) as usize;
        if write_all(&stream, &piece[..len]).is_err() {
            return;
        }
        left -= len as u64;
    }
    finish(body, stream);
}

/// The catch-all: says which component ran and what the host told it about the route.
fn describe(request: &IncomingRequest, path_with_query: &str, out: ResponseOutparam) {
    let headers = request.headers();
    let name = std::env::var("SKIFF_TEST_NAME").unwrap_or_else(|_| "unnamed".to_string());
    let matched = header(&headers, "skiff-matched-route").unwrap_or_else(|| "-".to_string());
    let info = header(&headers, "skiff-path-info").unwrap_or_else(|| "-".to_string());
    let text = format!(
        "component={name} method={} path={path_with_query} matched={matched} info={info}\n",
        method_name(&request.method()),
    );
    respond(out, 200, text.as_bytes());
}

// ---- helpers -----------------------------------------------------------------------------

/// A complete small response: status, `text/plain` content type, body.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let (outgoing, stream) = start_response(out, status, text_headers());
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

/// Writes every byte in pieces of at most 4096, the most one `blocking-write-and-flush` takes;
/// the host call waits for `check-write` capacity itself, which gives us back-pressure.
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

fn method_name(method: &Method) -> &str {
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

/// The percent-decoded value of `name` in a query string (`a=1&b=2`).
/// Makes a symlink at `link` (inside a granted folder) pointing at `target`, as written: Rust's
/// std has no stable symlink call on WASI, so through `wasi:filesystem` directly.
fn symlink(target: &str, link: &str) -> Result<(), String> {
    for (dir, root) in wasip2::filesystem::preopens::get_directories() {
        let root = root.trim_end_matches('/');
        if let Some(relative) = link.strip_prefix(root).and_then(|r| r.strip_prefix('/')) {
            return dir
                .symlink_at(target, relative)
                .map_err(|e| format!("cannot link {link} -> {target}: {e:?}"));
        }
    }
    Err(format!("{link} is in no granted folder"))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// Enough of `application/x-www-form-urlencoded` for test paths: `%XX` and `+`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One outbound GET; the host decides whether it may leave. Returns the upstream status, or
/// the `wasi:http` error code as text.
fn fetch(url: &str) -> Result<u16, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};

    let (scheme, rest) = url.split_once("://").ok_or("url needs a scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let future = outgoing_handler::handle(request, None).map_err(|code| format!("{code:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|code| format!("{code:?}"))?;
    Ok(response.status())
}

/// `black_box` stops the optimiser from turning the recursion into a loop. Frames are small,
/// so a deep recursion exhausts the engine's Wasm stack before Rust's shadow stack in linear
/// memory.
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    1 + recurse(std::hint::black_box(depth - 1))
}
