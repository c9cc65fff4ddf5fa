//! A queue pipeline's two ends in one component, for the queue tests: a `wasi:http` producer
//! route, and a `wasi:messaging` consumer that transforms each message and publishes the result.
//!
//! HTTP (under skiff, the path is picked by `skiff-path-info`):
//!
//! | path                                  | does                                                   |
//! |---------------------------------------|--------------------------------------------------------|
//! | `/enqueue?queue=Q&n=N&prefix=P`       | publishes `P-0` .. `P-(N-1)` to Q; 200 `sent N`, or 503 with the error |
//! | `/count?key=K`                        | the counter K in store `default` (0 if unset)          |
//! | `/check?prefix=P&n=N`                 | of `P-0` .. `P-(N-1)`, how many were never seen and how many more than once: `missing M duplicated D` |
//! | `POST /deliver`                       | a message delivered as a request (`skiff-trigger: queue`): handled like one through `wasi:messaging` (no republishing), and its trace id (from `traceparent`) kept as `trace:DATA`; 500 for `fail...` |
//! | `/get?key=K`                          | the value of K in store `default`, as text (empty if unset) |
//!
//! Messages (`wasi:messaging/incoming-handler@0.2.0-draft`):
//! - `fail...`: the handler fails (`error::other`), every time;
//! - `sleep:MS:...`: sleeps MS milliseconds, then goes on as below;
//! - `flaky:N:...`: fails its first N deliveries (counted in `tries:DATA`), then goes on;
//! - anything else: counts it (counter `handled`, and `seen:DATA`, whose value above 1 shows a
//!   duplicate delivery), then publishes it upper-cased to the queue its `reply-to` metadata
//!   names, if any; a publish that fails fails the handler.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../crates/skiff-runtime/wit",
        world: "skiff:host/queue-consumer",
        generate_all,
    });
}

use bindings::exports::wasi::messaging::incoming_handler;
use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use bindings::wasi::messaging::producer;
use bindings::wasi::messaging::types::{Client, Error, Message};
use wasip2::exports::http::incoming_handler::Guest as HttpGuest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(QueueGuest);
bindings::export!(QueueGuest with_types_in bindings);

struct QueueGuest;

impl incoming_handler::Guest for QueueGuest {
    fn handle(message: Message) -> Result<(), Error> {
        let data = message.data();
        let text = String::from_utf8_lossy(&data).into_owned();
        handle_text(&text).map_err(Error::Other)?;
        let reply_to = message
            .metadata()
            .unwrap_or_default()
            .into_iter()
            .find(|(key, _)| key == "reply-to")
            .map(|(_, value)| value);
        if let Some(queue) = reply_to {
            let client = Client::connect("default")?;
            let result = Message::new(text.to_uppercase().as_bytes());
            result.set_content_type("text/plain");
            producer::send(&client, &queue, result)?;
        }
        Ok(())
    }
}

/// What both ways of receiving a message do with it: fail, or sleep and count it.
fn handle_text(text: &str) -> Result<(), String> {
    if text.starts_with("fail") {
        return Err(format!("refusing `{text}`"));
    }
    if let Some(rest) = text.strip_prefix("flaky:") {
        let failures: u64 = rest
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if count(&format!("tries:{text}"))? <= failures {
            return Err(format!("`{text}` fails this time"));
        }
    }
    if let Some(rest) = text.strip_prefix("sleep:") {
        let ms: u64 = rest
            .split(':')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
    }
    count("handled")?;
    count(&format!("seen:{text}"))?;
    Ok(())
}

impl HttpGuest for QueueGuest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((path_with_query.as_str(), ""));
        let info = header(&request.headers(), "skiff-path-info");
        let path = match info.as_deref() {
            Some(info) if !info.is_empty() => info.to_string(),
            _ => path.to_string(),
        };
        let param = |name: &str| query_param(query, name);
        let (status, body) = match path.as_str() {
            "/enqueue" => {
                let n: usize = param("n").parse().unwrap_or(1);
                match enqueue(&param("queue"), &param("prefix"), &param("reply-to"), n) {
                    Ok(()) => (200, format!("sent {n}")),
                    Err(error) => (503, format!("{error:?}")),
                }
            }
            "/count" => match read_counter(&param("key")) {
                Ok(value) => (200, value.to_string()),
                Err(error) => (503, error),
            },
            "/get" => match store::open("default").and_then(|b| b.get(&param("key"))) {
                Ok(value) => (
                    200,
                    String::from_utf8_lossy(&value.unwrap_or_default()).into_owned(),
                ),
                Err(error) => (503, format!("{error:?}")),
            },
            "/check" => {
                let n: usize = param("n").parse().unwrap_or(0);
                match check(&param("prefix"), n) {
                    Ok((missing, duplicated)) => {
                        (200, format!("missing {missing} duplicated {duplicated}"))
                    }
                    Err(error) => (503, error),
                }
            }
            "/deliver" => {
                let trigger = header(&request.headers(), "skiff-trigger");
                if trigger.as_deref() != Some("queue") {
                    (400, "not a queue delivery".to_string())
                } else {
                    let body = read_body(&request);
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let trace_id = header(&request.headers(), "traceparent")
                        .and_then(|t| t.split('-').nth(1).map(str::to_string))
                        .unwrap_or_default();
                    let kept = store::open("default").and_then(|bucket| {
                        bucket.set(&format!("trace:{text}"), trace_id.as_bytes())
                    });
                    match kept
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|()| handle_text(&text))
                    {
                        Ok(()) => (200, "handled".to_string()),
                        Err(error) => (500, error),
                    }
                }
            }
            other => (404, format!("no handler for {other}")),
        };
        respond(out, status, body.as_bytes());
    }
}

fn enqueue(queue: &str, prefix: &str, reply_to: &str, n: usize) -> Result<(), Error> {
    let client = Client::connect("default")?;
    for i in 0..n {
        let message = Message::new(format!("{prefix}-{i}").as_bytes());
        if !reply_to.is_empty() {
            message.add_metadata("reply-to", reply_to);
        }
        producer::send(&client, queue, message)?;
    }
    Ok(())
}

/// Of `PREFIX-0` .. `PREFIX-(n-1)`: how many were never seen, and how many more than once.
fn check(prefix: &str, n: usize) -> Result<(usize, usize), String> {
    let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
    let (mut missing, mut duplicated) = (0, 0);
    for i in 0..n {
        let seen = match bucket
            .get(&format!("seen:{prefix}-{i}"))
            .map_err(|e| format!("{e:?}"))?
        {
            Some(value) => String::from_utf8_lossy(&value).parse().unwrap_or(0u64),
            None => 0,
        };
        match seen {
            0 => missing += 1,
            1 => {}
            _ => duplicated += 1,
        }
    }
    Ok((missing, duplicated))
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let Ok(body) = request.consume() else {
        return Vec::new();
    };
    let Ok(stream) = body.stream() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    out
}

fn count(key: &str) -> Result<u64, String> {
    let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
    atomics::increment(&bucket, key, 1).map_err(|e| format!("{e:?}"))
}

fn read_counter(key: &str) -> Result<u64, String> {
    let bucket = store::open("default").map_err(|e| format!("{e:?}"))?;
    match bucket.get(key).map_err(|e| format!("{e:?}"))? {
        Some(value) => Ok(String::from_utf8_lossy(&value).parse().unwrap_or(0)),
        None => Ok(0),
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body taken once");
    let stream = outgoing.write().expect("stream taken once");
    ResponseOutparam::set(out, Ok(response));
    let _ = stream.blocking_write_and_flush(body);
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

fn header(headers: &Fields, name: &str) -> Option<String> {
    headers
        .get(name)
        .into_iter()
        .next()
        .map(|value| String::from_utf8_lossy(&value).into_owned())
}

/// The value of `name` in a query string (no percent-decoding: the tests send plain words).
fn query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_string())
        })
        .unwrap_or_default()
}
