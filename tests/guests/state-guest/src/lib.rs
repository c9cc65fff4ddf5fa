//! A `wasi:http/proxy` component for the state tests: key-value stores, config variables and
//! log records, one small handler per path (under skiff, picked by `skiff-path-info`).
//!
//! | path                                   | does                                                  |
//! |----------------------------------------|-------------------------------------------------------|
//! | `/kv/get?store=S&key=K`                | 200 with the value, or 404 `missing`                  |
//! | `/kv/set?store=S&key=K` (body = value) | stores the request body, 200 `ok`                     |
//! | `/kv/delete?store=S&key=K`             | 200 `ok`                                              |
//! | `/kv/exists?store=S&key=K`             | 200 `true` or `false`                                 |
//! | `/kv/list?store=S`                     | every key, one per line, following the cursor         |
//! | `/kv/incr?store=S&key=K&by=N&times=T`  | increments T times (default 1) by N (default 1); the last value |
//! | `/kv/batch?store=S&prefix=P&n=N`       | set-many N keys, get-many them back, delete-many them |
//! | `/kv2/cas-add?store=S&key=K&by=N&times=T` | adds N to K, T times, by compare-and-swap retried until it wins (wasi:keyvalue 0.2.0-draft2); the last value |
//! | `/kv2/incr?store=S&key=K&by=N`         | draft2's signed increment (N may be negative)         |
//! | `/kv2/list?store=S`                    | every key through draft2's string cursors             |
//! | `/config/NAME`                         | the variable's value, or 404 `unset`                  |
//! | `/config`                              | every variable as `name=value` lines                  |
//! | `/log?level=L&message=M`               | one wasi:logging record, 200 `logged`                 |
//! | `/schedule/run?store=S&sleep_ms=N`     | a scheduled run: only with `skiff-trigger: schedule` (else 400); sets `due:<skiff-scheduled-time>` (counting `duplicates` if it was set already), increments `runs`, then sleeps N ms |
//!
//! A store error is answered with 503 and the error (`access-denied`, `other(...)`): the
//! guest handles it, as an app should; nothing traps.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../crates/skiff-runtime/wit",
        world: "skiff:host/state",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use bindings::wasi::keyvalue0_2_0_draft2 as kv2;
use bindings::wasi::logging::logging;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(StateGuest);

struct StateGuest;

impl Guest for StateGuest {
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
            "/kv/get" => with_store(&param("store"), |bucket| {
                Ok(match bucket.get(&param("key"))? {
                    Some(value) => (200, value),
                    None => (404, b"missing".to_vec()),
                })
            }),
            "/kv/set" => {
                let value = read_body(request);
                with_store(&param("store"), |bucket| {
                    bucket.set(&param("key"), &value)?;
                    Ok((200, b"ok".to_vec()))
                })
            }
            "/kv/delete" => with_store(&param("store"), |bucket| {
                bucket.delete(&param("key"))?;
                Ok((200, b"ok".to_vec()))
            }),
            "/kv/exists" => with_store(&param("store"), |bucket| {
                Ok((200, bucket.exists(&param("key"))?.to_string().into_bytes()))
            }),
            "/kv/list" => with_store(&param("store"), |bucket| {
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let page = bucket.list_keys(cursor)?;
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                Ok((200, keys.join("\n").into_bytes()))
            }),
            "/schedule/run" => {
                let headers = request.headers();
                let trigger = header(&headers, "skiff-trigger");
                let due = header(&headers, "skiff-scheduled-time").unwrap_or_default();
                if trigger.as_deref() != Some("schedule") || due.is_empty() {
                    (400, b"not a scheduled run".to_vec())
                } else {
                    let answer = with_store(&param("store"), |bucket| {
                        let key = format!("due:{due}");
                        if bucket.exists(&key)? {
                            atomics::increment(bucket, "duplicates", 1)?;
                        }
                        bucket.set(&key, b"1")?;
                        let runs = atomics::increment(bucket, "runs", 1)?;
                        Ok((200, runs.to_string().into_bytes()))
                    });
                    let sleep: u64 = param("sleep_ms").parse().unwrap_or(0);
                    std::thread::sleep(std::time::Duration::from_millis(sleep));
                    answer
                }
            }
            "/kv/incr" => {
                let by = param("by").parse().unwrap_or(1);
                let times = param("times").parse().unwrap_or(1u32);
                with_store(&param("store"), |bucket| {
                    let mut last = 0;
                    for _ in 0..times {
                        last = atomics::increment(bucket, &param("key"), by)?;
                    }
                    Ok((200, last.to_string().into_bytes()))
                })
            }
            "/kv/batch" => {
                let prefix = param("prefix");
                let n: usize = param("n").parse().unwrap_or(3);
                with_store(&param("store"), |bucket| {
                    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
                    let entries: Vec<(String, Vec<u8>)> = keys
                        .iter()
                        .map(|k| (k.clone(), format!("value of {k}").into_bytes()))
                        .collect();
                    batch::set_many(bucket, &entries)?;
                    let mut asked = keys.clone();
                    asked.push(format!("{prefix}absent"));
                    let got = batch::get_many(bucket, &asked)?;
                    let mut lines = Vec::new();
                    for entry in got {
                        lines.push(match entry {
                            Some((k, v)) => format!("{k}={}", String::from_utf8_lossy(&v)),
                            None => "none".to_string(),
                        });
                    }
                    batch::delete_many(bucket, &keys)?;
                    let left = keys
                        .iter()
                        .filter(|k| bucket.exists(k).unwrap_or(true))
                        .count();
                    lines.push(format!("left after delete-many: {left}"));
                    Ok((200, lines.join("\n").into_bytes()))
                })
            }
            "/kv2/cas-add" => {
                let by: u64 = param("by").parse().unwrap_or(1);
                let times = param("times").parse().unwrap_or(1u32);
                with_store2(&param("store"), |bucket| {
                    let key = param("key");
                    let mut last = 0;
                    for _ in 0..times {
                        let mut cas = kv2::atomics::Cas::new(bucket, &key)?;
                        loop {
                            let current = cas
                                .current()?
                                .map(|v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0))
                                .unwrap_or(0);
                            match kv2::atomics::swap(cas, (current + by).to_string().as_bytes()) {
                                Ok(()) => {
                                    last = current + by;
                                    break;
                                }
                                Err(kv2::atomics::CasError::CasFailed(fresh)) => cas = fresh,
                                Err(kv2::atomics::CasError::StoreError(e)) => return Err(e),
                            }
                        }
                    }
                    Ok((200, last.to_string().into_bytes()))
                })
            }
            "/kv2/incr" => {
                let by: i64 = param("by").parse().unwrap_or(1);
                with_store2(&param("store"), |bucket| {
                    let value = kv2::atomics::increment(bucket, &param("key"), by)?;
                    Ok((200, value.to_string().into_bytes()))
                })
            }
            "/kv2/list" => with_store2(&param("store"), |bucket| {
                let mut keys = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let page = bucket.list_keys(cursor.as_deref())?;
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                Ok((200, keys.join("\n").into_bytes()))
            }),
            "/config" => match config::get_all() {
                Ok(all) => {
                    let lines: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    (200, lines.join("\n").into_bytes())
                }
                Err(e) => (503, format!("{e:?}").into_bytes()),
            },
            "/log" => {
                let level = match param("level").as_str() {
                    "trace" => logging::Level::Trace,
                    "debug" => logging::Level::Debug,
                    "warn" => logging::Level::Warn,
                    "error" => logging::Level::Error,
                    "critical" => logging::Level::Critical,
                    _ => logging::Level::Info,
                };
                logging::log(level, "state-guest", &param("message"));
                (200, b"logged".to_vec())
            }
            other => match other.strip_prefix("/config/") {
                Some(name) => match config::get(name) {
                    Ok(Some(value)) => (200, value.into_bytes()),
                    Ok(None) => (404, b"unset".to_vec()),
                    Err(e) => (503, format!("{e:?}").into_bytes()),
                },
                None => (404, format!("no handler for {other}").into_bytes()),
            },
        };
        respond(out, status, &body);
    }
}

/// Opens the store and runs `work`; any store error becomes a 503 naming it.
fn with_store(
    label: &str,
    work: impl FnOnce(&store::Bucket) -> Result<(u16, Vec<u8>), store::Error>,
) -> (u16, Vec<u8>) {
    match store::open(label).and_then(|bucket| work(&bucket)) {
        Ok(answer) => answer,
        Err(error) => (503, describe(&error).into_bytes()),
    }
}

/// [`with_store`] for wasi:keyvalue 0.2.0-draft2.
fn with_store2(
    label: &str,
    work: impl FnOnce(&kv2::store::Bucket) -> Result<(u16, Vec<u8>), kv2::store::Error>,
) -> (u16, Vec<u8>) {
    match kv2::store::open(label).and_then(|bucket| work(&bucket)) {
        Ok(answer) => answer,
        Err(kv2::store::Error::AccessDenied) => (503, b"store error: access-denied".to_vec()),
        Err(kv2::store::Error::NoSuchStore) => (503, b"store error: no-such-store".to_vec()),
        Err(kv2::store::Error::Other(why)) => {
            (503, format!("store error: other({why})").into_bytes())
        }
    }
}

fn describe(error: &store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "store error: no-such-store".to_string(),
        store::Error::AccessDenied => "store error: access-denied".to_string(),
        store::Error::Other(why) => format!("store error: other({why})"),
    }
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else {
        return out;
    };
    let Ok(stream) = body.stream() else {
        return out;
    };
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(_)) => break,
        }
    }
    out
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body taken once");
    let stream = outgoing.write().expect("stream taken once");
    ResponseOutparam::set(out, Ok(response));
    for piece in body.chunks(4096) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return;
        }
    }
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

/// The percent-decoded value of `name` in a query string, or "" when absent.
fn query_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
        .unwrap_or_default()
}

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
