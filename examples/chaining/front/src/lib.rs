//! `front`: the app's front door (route `/...`). `GET /?item=NAME` (default `coffee`) asks the
//! `pricing` component for the price, in process, at
//! `http://pricing.skiff.internal/price?item=NAME`, and renders the answer as text:
//!
//! ```text
//! A coffee costs 3.20 EUR.
//! (priced by the pricing component, called in process)
//! ```
//!
//! Any other path is 404: `front` is the only component with a route, so `pricing` is never
//! reached from outside.

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

wasip2::http::proxy::export!(Front);

struct Front;

/// Where `pricing` answers: the in-process address skiff gives each component.
const PRICING: &str = "pricing.skiff.internal";

impl Guest for Front {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if !matches!(request.method(), Method::Get) {
            return respond(out, 405, "GET only\n");
        }
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        if path != "/" {
            return respond(out, 404, "not found: try /?item=coffee\n");
        }
        let item = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("item="))
            .unwrap_or("coffee");
        // The item goes into another request's URL: letters and `-` only.
        if item.is_empty()
            || item.len() > 32
            || !item.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        {
            return respond(out, 400, "an item is 1 to 32 lowercase letters or `-`\n");
        }

        match ask_pricing(item) {
            Ok((200, body)) => match price_of(&body) {
                Some((cents, currency)) => {
                    let text = format!(
                        "A {item} costs {}.{:02} {currency}.\n\
                         (priced by the pricing component, called in process)\n",
                        cents / 100,
                        cents % 100
                    );
                    respond(out, 200, &text);
                }
                None => respond(out, 502, "pricing answered something else than a price\n"),
            },
            Ok((404, _)) => respond(out, 404, &format!("We do not sell {item}.\n")),
            Ok((status, _)) => respond(out, 502, &format!("pricing answered {status}\n")),
            Err(why) => {
                eprintln!("front: calling pricing failed: {why}");
                respond(out, 502, "pricing could not be asked\n")
            }
        }
    }
}

/// `GET http://pricing.skiff.internal/price?item=ITEM`: the status and the body.
fn ask_pricing(item: &str) -> Result<(u16, Vec<u8>), String> {
    let request = OutgoingRequest::new(Fields::new());
    let set = request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(PRICING)))
        .and_then(|()| request.set_path_with_query(Some(&format!("/price?item={item}"))));
    set.map_err(|()| "cannot build the request".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("{code:?}")),
        Some(Err(())) | None => return Err("the response was lost".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "no body".to_string())?;
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                let code: Option<ErrorCode> = wasip2::http::types::http_error_code(&error);
                return Err(format!("reading the body: {code:?}"));
            }
        }
        if bytes.len() > 64 * 1024 {
            return Err("the answer is too large".into());
        }
    }
    Ok((status, bytes))
}

/// `price_cents` and `currency` from pricing's JSON.
fn price_of(body: &[u8]) -> Option<(u64, String)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let cents = value.get("price_cents")?.as_u64()?;
    let currency = value.get("currency")?.as_str()?.to_string();
    Some((cents, currency))
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    let Ok(stream) = outgoing.write() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let ok = text
        .as_bytes()
        .chunks(4096)
        .all(|piece| stream.blocking_write_and_flush(piece).is_ok());
    drop(stream);
    if ok {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
