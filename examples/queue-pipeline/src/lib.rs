//! A transformation pipeline on skiff's queues: one component file, three parts, and
//! skiff.toml decides which part each component is. Nothing here knows the component's name:
//! skiff calls `api` only for routed requests, `transform` only with messages of `records`, and
//! `collector` only with POSTs of `results` messages to `/collect`.
//!
//! - `api` (wasi:http, route `/...`): `POST /records` takes lines `name,amount` and publishes
//!   each as one message to `records`; `GET /results` and `GET /results/count` read what the
//!   collector stored.
//! - `transform` (wasi:messaging's incoming-handler): turns `ada,12.50` into
//!   `{"id":1,"name":"ADA","amount_cents":1250}` and publishes it to `results`.
//! - `collector` (wasi:http, `POST /collect` from the queue trigger): stores each result in the
//!   key-value store `default`, once however often it is delivered.
//!
//! Delivery is at least once: a message is acknowledged only after its handler succeeded, so
//! a handler may see a message again. The API gives every record an id (metadata `record-id`)
//! that travels with it through both queues; the collector stores a result under that id, so
//! a repeat overwrites instead of adding.

mod bindings {
    wit_bindgen::generate!({
        path: "../../crates/skiff-runtime/wit",
        world: "skiff:host/queue-consumer",
        generate_all,
    });
}

use std::collections::HashMap;

use bindings::exports::wasi::messaging::incoming_handler;
use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use bindings::wasi::messaging::producer;
use bindings::wasi::messaging::types::{Client, Error, Message};
use serde::Serialize;
use wasip2::exports::http::incoming_handler::Guest as HttpGuest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Pipeline);
bindings::export!(Pipeline with_types_in bindings);

struct Pipeline;

/// The queue of incoming records, and the queue of transformed ones.
const RECORDS: &str = "records";
const RESULTS: &str = "results";
/// The metadata entry holding a record's id: set by the API, passed on by the transform.
const RECORD_ID: &str = "record-id";
/// The key-value store, shared by every component of the app.
const STORE: &str = "default";
/// The counter the API takes record ids from.
const LAST_ID: &str = "records:last-id";
/// Where the collector stores results: `result:` and the record id, zero-padded so that the
/// keys' text order is the records' order.
const RESULT_PREFIX: &str = "result:";
/// The largest request body read (a message holds at most 1 MiB anyway).
const MAX_BODY: usize = 1024 * 1024;

/// A record as a client writes it: `name,amount`.
struct Record {
    name: String,
    amount_cents: u64,
}

/// A record as the transform publishes it (fields in this order).
#[derive(Serialize)]
struct Transformed {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    name: String,
    amount_cents: u64,
}

/// Reads `name,amount`: a non-empty name, and an amount such as `12`, `12.5` or `12.50`.
/// The API and the transform both use it, so what the API accepts the transform can handle.
fn parse_record(line: &str) -> Result<Record, String> {
    let Some((name, amount)) = line.split_once(',') else {
        return Err("expected `name,amount`, e.g. `ada,12.50`".into());
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    let amount = amount.trim();
    let amount_cents =
        parse_cents(amount).ok_or_else(|| format!("`{amount}` is not an amount such as 12.50"))?;
    Ok(Record {
        name: name.to_string(),
        amount_cents,
    })
}

/// `12.50` as 1250: digits, then optionally `.` and one or two digits. `None` for anything
/// else (a sign, an exponent, a third decimal, more than fits in a u64), so that money is
/// never rounded silently.
fn parse_cents(text: &str) -> Option<u64> {
    let (units, cents) = match text.split_once('.') {
        Some((units, cents)) if (1..=2).contains(&cents.len()) => (units, cents),
        Some(_) => return None,
        None => (text, "0"),
    };
    // `u64::from_str` takes a leading `+`: only plain digits are an amount here.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(units) || !digits(cents) {
        return None;
    }
    let scale = if cents.len() == 1 { 10 } else { 1 };
    let cents = cents.parse::<u64>().ok()? * scale;
    units
        .parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

/// The transform: called by skiff with each message of `records`. An `Err` tells skiff the
/// message was not handled: it is delivered again, and after `max_attempts` (3, in skiff.toml)
/// moved to the dead-letter queue `records-dead` with the error as its reason.
impl incoming_handler::Guest for Pipeline {
    fn handle(message: Message) -> Result<(), Error> {
        let data = message.data();
        let line = std::str::from_utf8(&data)
            .map_err(|_| Error::Other("the record is not UTF-8".into()))?
            .trim();
        let record = parse_record(line).map_err(|why| Error::Other(format!("`{line}`: {why}")))?;
        // A record published by another producer may come without an id; one that has an
        // id that is not a number is refused rather than stored under a wrong key.
        let id = match metadata(&message, RECORD_ID) {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| Error::Other(format!("{RECORD_ID} `{text}` is not a number")))?,
            ),
        };
        let transformed = Transformed {
            id,
            name: record.name.to_uppercase(),
            amount_cents: record.amount_cents,
        };
        let json = serde_json::to_vec(&transformed).map_err(|e| Error::Other(e.to_string()))?;
        let result = Message::new(&json);
        result.set_content_type("application/json");
        if let Some(id) = id {
            result.add_metadata(RECORD_ID, &id.to_string());
        }
        // A send that fails (the queue full, the store unreachable) fails the handler, so the
        // record is tried again rather than lost.
        producer::send(&Client::connect(STORE)?, RESULTS, result)
    }
}

/// The value of metadata entry `key`, if the message has it.
fn metadata(message: &Message, key: &str) -> Option<String> {
    message
        .metadata()
        .unwrap_or_default()
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// An answer: status, content type, body.
struct Reply(u16, &'static str, String);

fn text(status: u16, body: impl Into<String>) -> Reply {
    Reply(status, "text/plain; charset=utf-8", body.into())
}

/// The API's routes and the collector's `/collect`.
impl HttpGuest for Pipeline {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query.split('?').next().unwrap_or_default();
        let reply = match (request.method(), path) {
            (Method::Post, "/records") => match read_text(&request) {
                Ok(body) => post_records(&body),
                Err(reply) => reply,
            },
            (Method::Get, "/results") => results(),
            (Method::Get, "/results/count") => count(),
            (Method::Post, "/collect") => collect(&request),
            (_, "/records" | "/results" | "/results/count" | "/collect") => {
                text(405, "method not allowed\n")
            }
            _ => text(404, "POST /records, GET /results or GET /results/count\n"),
        };
        respond(out, reply);
    }
}

/// `POST /records`: one message to `records` per non-empty line.
fn post_records(body: &str) -> Reply {
    // Every line is checked before any is published: a batch with a bad line is refused
    // whole, so the client can fix it and send it again without duplicating the rest.
    let mut lines = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(why) = parse_record(line) {
            return text(400, format!("line {}: `{line}`: {why}\n", n + 1));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return text(
            400,
            "no records: send lines `name,amount`, e.g. `ada,12.50`\n",
        );
    }
    let count = lines.len() as u64;
    // One id per record, reserved in one atomic step: unique across requests and hosts, and
    // in the order records arrived, the order GET /results shows them in.
    let last =
        match store::open(STORE).and_then(|bucket| atomics::increment(&bucket, LAST_ID, count)) {
            Ok(last) => last,
            Err(error) => return text(503, format!("the store failed: {error:?}\n")),
        };
    let first = last.saturating_sub(count) + 1;
    let client = match Client::connect(STORE) {
        Ok(client) => client,
        Err(error) => return text(503, format!("cannot reach the queues: {error:?}\n")),
    };
    for (i, (line, id)) in lines.iter().zip(first..).enumerate() {
        let message = Message::new(line.as_bytes());
        message.set_content_type("text/csv");
        message.add_metadata(RECORD_ID, &id.to_string());
        if let Err(error) = producer::send(&client, RECORDS, message) {
            // Those already sent will be handled: say how many, so the client resends the rest.
            return text(503, format!("queued {i} of {count}, then: {error:?}\n"));
        }
    }
    text(202, format!("queued {count}\n"))
}

/// `POST /collect`: one message of `results`, delivered by the queue trigger. A 2xx answer
/// acknowledges it; any other is a failure, and skiff delivers it again later.
fn collect(request: &IncomingRequest) -> Reply {
    let header = |name: &str| {
        let values = request.headers().get(name);
        values
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    // skiff removes every `skiff-*` header a client sends: this one proves the queue trigger
    // sent the request, so no client can slip a result in through the API's route.
    if header("skiff-trigger").as_deref() != Some("queue") {
        return text(403, "results are delivered by the queue `results` only\n");
    }
    let body = match read_text(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    // Only JSON is stored, so that GET /results, which lists results as stored, is JSON.
    // Anything else is refused: delivered again, then dead-lettered to `results-dead`.
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&body) {
        return text(400, format!("the result is not JSON: {error}\n"));
    }
    // The key is what makes storing idempotent. A repeat delivery of this message (the same
    // `skiff-message-id`) writes the same key; so does a second result for the same record (the
    // transform published, then failed and was retried: a new message with a new id), because
    // the record id travels in the metadata. A result without one falls back to its message id.
    let record_id = header("skiff-message-metadata")
        .and_then(|json| serde_json::from_str::<HashMap<String, String>>(&json).ok())
        .and_then(|metadata| metadata.get(RECORD_ID)?.parse::<u64>().ok());
    let key = match (record_id, header("skiff-message-id")) {
        (Some(id), _) => format!("{RESULT_PREFIX}{id:020}"),
        (None, Some(message_id)) => format!("{RESULT_PREFIX}message-{message_id}"),
        (None, None) => return text(400, "no record id and no skiff-message-id\n"),
    };
    match store::open(STORE).and_then(|bucket| bucket.set(&key, body.trim().as_bytes())) {
        Ok(()) => text(200, format!("stored {key}\n")),
        // Not acknowledged: skiff delivers it again.
        Err(error) => text(503, format!("the store failed: {error:?}\n")),
    }
}

/// `GET /results`: the stored results as a JSON array, one per line, in record order.
fn results() -> Reply {
    let read = || -> Result<Vec<String>, store::Error> {
        let bucket = store::open(STORE)?;
        let mut results = Vec::new();
        for key in result_keys(&bucket)? {
            if let Some(value) = bucket.get(&key)? {
                results.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(results)
    };
    match read() {
        Ok(results) if results.is_empty() => Reply(200, "application/json", "[]\n".into()),
        Ok(results) => Reply(
            200,
            "application/json",
            format!("[\n{}\n]\n", results.join(",\n")),
        ),
        Err(error) => text(503, format!("the store failed: {error:?}\n")),
    }
}

/// `GET /results/count`: how many results are stored. Counted from the keys rather than kept
/// in a counter: a counter bumped by the collector would count a repeat delivery twice.
fn count() -> Reply {
    match store::open(STORE).and_then(|bucket| result_keys(&bucket)) {
        Ok(keys) => text(200, format!("{}\n", keys.len())),
        Err(error) => text(503, format!("the store failed: {error:?}\n")),
    }
}

/// The keys of stored results, sorted: record order.
fn result_keys(bucket: &store::Bucket) -> Result<Vec<String>, store::Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor)?;
        keys.extend(
            page.keys
                .into_iter()
                .filter(|k| k.starts_with(RESULT_PREFIX)),
        );
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    // A store lists keys in its own order (Redis in none) and may repeat one across pages.
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The request body as text; at most [`MAX_BODY`] bytes, and UTF-8.
fn read_text(request: &IncomingRequest) -> Result<String, Reply> {
    let unreadable = || text(400, "the body could not be read\n");
    let body = request.consume().map_err(|()| unreadable())?;
    let stream = body.stream().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            // Cut off mid-way: refuse it rather than act on half a body.
            Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
        }
        if bytes.len() > MAX_BODY {
            return Err(text(413, format!("the body is over {MAX_BODY} bytes\n")));
        }
    }
    String::from_utf8(bytes).map_err(|_| text(400, "the body is not UTF-8\n"))
}

fn respond(out: ResponseOutparam, Reply(status, content_type, body): Reply) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[content_type.as_bytes().to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    // Taken once each, on a response just made: these cannot fail.
    let Ok(outgoing) = response.body() else {
        return;
    };
    let Ok(stream) = outgoing.write() else { return };
    ResponseOutparam::set(out, Ok(response));
    // One blocking write takes at most 4096 bytes; a long list of results takes several.
    for chunk in body.as_bytes().chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            break; // the client went away
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}
