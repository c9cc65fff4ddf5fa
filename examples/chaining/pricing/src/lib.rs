//! `pricing`: answers `GET /price?item=NAME` with the item's price as JSON,
//! `{"item":"tea","price_cents":250,"currency":"EUR"}`, or 404 `{"error":"unknown item"}`.
//!
//! It has no route in skiff.toml, so no client can reach it; components whose
//! `allowed_outbound_hosts` name `http://pricing.skiff.internal` call it in process. Skiff tells
//! it who called in `skiff-caller` (a header no client and no guest can set), and it answers
//! `front` only: 403 for anyone else.

use serde_json::json;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Pricing);

struct Pricing;

/// The price list: item, price in cents.
const PRICES: &[(&str, u64)] = &[("coffee", 320), ("tea", 250), ("croissant", 180)];

/// The only component allowed to ask.
const CALLER: &str = "front";

impl Guest for Pricing {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let caller = request
            .headers()
            .get("skiff-caller")
            .first()
            .map(|value| String::from_utf8_lossy(value).into_owned());
        if caller.as_deref() != Some(CALLER) {
            let who = caller.unwrap_or_else(|| "a client".into());
            eprintln!("pricing: refused a request from {who}");
            return respond(
                out,
                403,
                &json!({ "error": format!("only {CALLER} may ask") }),
            );
        }
        if !matches!(request.method(), Method::Get) {
            return respond(out, 405, &json!({ "error": "GET only" }));
        }
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
        if path != "/price" {
            return respond(out, 404, &json!({ "error": "no such path" }));
        }
        let item = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("item="))
            .unwrap_or("");
        match PRICES.iter().find(|(name, _)| *name == item) {
            Some((name, cents)) => respond(
                out,
                200,
                &json!({ "item": name, "price_cents": cents, "currency": "EUR" }),
            ),
            None => respond(out, 404, &json!({ "error": "unknown item" })),
        }
    }
}

fn respond(out: ResponseOutparam, status: u16, body: &serde_json::Value) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    let Ok(stream) = outgoing.write() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let text = format!("{body}\n");
    // Small bodies: one write (at most 4096 bytes per call).
    let ok = text
        .as_bytes()
        .chunks(4096)
        .all(|piece| stream.blocking_write_and_flush(piece).is_ok());
    drop(stream);
    if ok {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
