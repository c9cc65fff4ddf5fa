//! A `wasi:http` middleware that limits how many requests each client makes per time window
//! (a fixed window: `limit` requests per `window_seconds`, counted from the Unix epoch).
//!
//! - **The client** is the verified subject in `x-jwt-sub` when a token check ran before this
//!   middleware (the `jwt` component removes any `x-jwt-sub` a client sends), else the client's
//!   IP address from `skiff-client-addr` (which skiff sets, and no client can).
//! - **Counting**: each request increments the counter `rl:<client>:<window-start>` in the
//!   key-value store `default`, with `wasi:keyvalue/atomics` `increment`: atomic, so
//!   concurrent requests (and several hosts sharing one Redis store) count exactly.
//! - **Over the limit**: 429 with `retry-after` (the seconds left in the window) and a small
//!   JSON body; the request goes no further.
//! - **Every response** it gives or relays carries `x-ratelimit-limit` and
//!   `x-ratelimit-remaining`.
//! - **Store down**: 503 with `retry-after`, rather than letting unlimited traffic through
//!   (a choice; see README.md).
//!
//! Variables: `limit` (default 5, 1 to 1,000,000) and `window_seconds` (default 10, 1 to
//! 86,400).

mod bindings {
    wit_bindgen::generate!({
        path: "../../../crates/skiff-runtime/wit",
        world: "skiff:host/keyvalue",
        generate_all,
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, store};
use gateway_common::{
    answer_failure, copy_headers, json_error, now_unix, number_variable, relay, send_on,
    single_header,
};
use sha2::{Digest as _, Sha256};
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wasip2::http::proxy::export!(Limit);

struct Limit;

/// Client ids longer than this are counted under their SHA-256 instead, so that every key
/// stays short (a store's keys are at most 4 KiB).
const MAX_CLIENT_IN_KEY: usize = 128;

impl Guest for Limit {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let settings = number_variable("limit", 5, 1, 1_000_000).and_then(|limit| {
            number_variable("window_seconds", 10, 1, 86_400).map(|window| (limit, window))
        });
        let (limit, window) = match settings {
            Ok(settings) => settings,
            Err(why) => {
                eprintln!("limit: misconfigured: {why}");
                return json_error(
                    out,
                    500,
                    &[],
                    "gateway_misconfigured",
                    "the gateway's rate limit is misconfigured",
                );
            }
        };
        let headers = request.headers();
        let Some(client) = client_of(
            single_header(&headers, "x-jwt-sub").as_deref(),
            single_header(&headers, "skiff-client-addr").as_deref(),
        ) else {
            return json_error(
                out,
                400,
                &[],
                "unknown_client",
                "the client cannot be told apart from others",
            );
        };

        let now = now_unix();
        let window_start = now - now % window;
        let key = format!("rl:{client}:{window_start}");
        let count =
            match store::open("default").and_then(|bucket| atomics::increment(&bucket, &key, 1)) {
                Ok(count) => count,
                Err(error) => {
                    eprintln!("limit: the store failed: {error:?}");
                    return json_error(
                        out,
                        503,
                        &[("retry-after", "1".into())],
                        "unavailable",
                        "the rate limiter's store is unavailable",
                    );
                }
            };

        let marks = [
            ("x-ratelimit-limit", limit.to_string()),
            (
                "x-ratelimit-remaining",
                limit.saturating_sub(count).to_string(),
            ),
        ];
        if count > limit {
            let retry_after = (window_start + window).saturating_sub(now).max(1);
            let mut answer = marks.to_vec();
            answer.push(("retry-after", retry_after.to_string()));
            return json_error(
                out,
                429,
                &answer,
                "rate_limited",
                &format!("at most {limit} requests per {window} s; try again in {retry_after} s"),
            );
        }
        let forwarded = copy_headers(&headers, &[]);
        drop(headers);
        match send_on(request, forwarded) {
            Ok(response) => relay(out, response, &marks),
            Err(failure) => answer_failure(out, "limit", failure),
        }
    }
}

/// Who is asking: `sub:<subject>` when a verified subject came with the request, else
/// `ip:<address>` from skiff's `skiff-client-addr` (`127.0.0.1:51234`, `[::1]:51234`).
fn client_of(subject: Option<&str>, client_addr: Option<&str>) -> Option<String> {
    let id = match (subject, client_addr) {
        (Some(subject), _) if !subject.is_empty() => format!("sub:{subject}"),
        (_, Some(addr)) => {
            let ip = match addr.rsplit_once(':') {
                Some((ip, port)) if port.chars().all(|c| c.is_ascii_digit()) => ip,
                _ => addr,
            };
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if ip.is_empty() {
                return None;
            }
            format!("ip:{ip}")
        }
        _ => return None,
    };
    if id.len() <= MAX_CLIENT_IN_KEY {
        return Some(id);
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}
