//! A `wasi:http` middleware that lets a request through only with a valid
//! `Authorization: Bearer <JWT>`, and tells the services behind it who the caller is.
//!
//! - **Algorithms**: HS256 (HMAC-SHA256 with the secret variable `hs256_secret`) and RS256
//!   (RSASSA-PKCS1-v1_5 with SHA-256, the public key picked by the token's `kid` from the JWKS
//!   file named by `jwks_file`). Only the algorithms in `algorithms` are accepted, and each only
//!   with its own kind of key: an HMAC key is never made from a JWKS key, so a token "signed"
//!   with HS256 and the RSA public key as secret (alg confusion) fails, as does `alg: none`.
//! - **Claims**: `exp` is required and `nbf` honoured, both with `leeway_seconds` of leeway for
//!   clocks that differ; `sub` is required (a non-empty string); `aud` and `iss` are checked
//!   when the variables `audience` and `issuer` are set.
//! - **On success** the request goes on to the next hop with `x-jwt-sub: <sub>`; any
//!   `x-jwt-sub` the client sent is removed first, so it cannot be forged.
//! - **On failure**: 401 with `www-authenticate: Bearer error="invalid_token",
//!   error_description="..."` (RFC 6750) and a small JSON body. A request without any
//!   credentials gets `www-authenticate: Bearer realm="gateway"`, without an error code, as
//!   RFC 6750 section 3.1 asks.
//!
//! Variables (component variables, read through `wasi:config/store`):
//!
//! | name | default | what |
//! |---|---|---|
//! | `algorithms` | `HS256,RS256` | the algorithms accepted, comma-separated |
//! | `hs256_secret` | none | the HMAC secret (at least 32 bytes); HS256 needs it |
//! | `jwks_file` | none | the path, as the component sees it, of the JWKS file; RS256 needs it |
//! | `audience` | none | when set, `aud` must be it or a list holding it |
//! | `issuer` | none | when set, `iss` must be it |
//! | `leeway_seconds` | `30` | leeway for `exp` and `nbf`, 0 to 300 |
//!
//! Nothing the client sends can make the component trap: every malformed input is a 401.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway_common::{
    answer_failure, copy_headers, header_values, json_error, now_unix, relay, send_on, variable,
};
use hmac::{Hmac, Mac};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::Sha256;
use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wasip2::http::proxy::export!(Jwt);

struct Jwt;

/// The header that carries the verified subject to the next hops.
const SUBJECT_HEADER: &str = "x-jwt-sub";

/// Longest token accepted; real tokens are a few hundred bytes to a few KiB.
const MAX_TOKEN: usize = 8 * 1024;

/// Longest subject passed on.
const MAX_SUBJECT: usize = 256;

/// Largest JWKS file read.
const MAX_JWKS: u64 = 256 * 1024;

/// Smallest RSA key accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// Shortest HS256 secret accepted, in bytes: the hash's size (RFC 7518, section 3.2).
const MIN_SECRET: usize = 32;

impl Guest for Jwt {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let config = match Config::load() {
            Ok(config) => config,
            Err(why) => {
                eprintln!("jwt: misconfigured: {why}");
                return json_error(
                    out,
                    500,
                    &[],
                    "gateway_misconfigured",
                    "the gateway's token check is misconfigured",
                );
            }
        };
        let headers = request.headers();
        let authorization = header_values(&headers, "authorization");
        let subject = match check(&config, &authorization, now_unix()) {
            Ok(subject) => subject,
            Err(Denied::NoCredentials) => {
                return json_error(
                    out,
                    401,
                    &[("www-authenticate", "Bearer realm=\"gateway\"".into())],
                    "missing_token",
                    "send Authorization: Bearer <token>",
                );
            }
            Err(Denied::Invalid(why)) => {
                eprintln!("jwt: token refused: {why}");
                let challenge =
                    format!("Bearer error=\"invalid_token\", error_description=\"{why}\"");
                return json_error(
                    out,
                    401,
                    &[("www-authenticate", challenge)],
                    "invalid_token",
                    why,
                );
            }
            Err(Denied::Unavailable(why)) => {
                eprintln!("jwt: cannot check the token: {why}");
                return json_error(
                    out,
                    503,
                    &[("retry-after", "5".into())],
                    "unavailable",
                    "the gateway cannot check tokens right now",
                );
            }
        };

        // The client's own `x-jwt-sub`, if any, never goes on: only the verified one.
        let forwarded = copy_headers(&headers, &[SUBJECT_HEADER]);
        drop(headers);
        if forwarded
            .set(SUBJECT_HEADER, &[subject.into_bytes()])
            .is_err()
        {
            return json_error(
                out,
                401,
                &[],
                "invalid_token",
                "the subject is not a header value",
            );
        }
        match send_on(request, forwarded) {
            Ok(response) => relay(out, response, &[]),
            Err(failure) => answer_failure(out, "jwt", failure),
        }
    }
}

// ---- configuration ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }
}

struct Config {
    algorithms: Vec<Alg>,
    secret: Option<Vec<u8>>,
    jwks_file: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: u64,
}

impl Config {
    fn load() -> Result<Config, String> {
        let names = variable("algorithms")?.unwrap_or_else(|| "HS256,RS256".to_string());
        let mut algorithms = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            // `none` and every other algorithm are refused here, once, for good.
            let alg = Alg::parse(name).ok_or_else(|| {
                format!("`algorithms` names {name:?}: only HS256 and RS256 are supported")
            })?;
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err("`algorithms` names no algorithm".into());
        }
        let secret = variable("hs256_secret")?.map(String::into_bytes);
        if algorithms.contains(&Alg::Hs256) && secret.as_ref().is_none_or(|s| s.len() < MIN_SECRET)
        {
            return Err(format!(
                "HS256 is accepted but `hs256_secret` is unset or shorter than {MIN_SECRET} bytes"
            ));
        }
        let jwks_file = variable("jwks_file")?;
        if algorithms.contains(&Alg::Rs256) && jwks_file.is_none() {
            return Err("RS256 is accepted but `jwks_file` is unset".into());
        }
        Ok(Config {
            algorithms,
            secret,
            jwks_file,
            audience: variable("audience")?,
            issuer: variable("issuer")?,
            leeway: gateway_common::number_variable("leeway_seconds", 30, 0, 300)?,
        })
    }
}

// ---- the check ----------------------------------------------------------------------------

enum Denied {
    /// No `Authorization` header at all.
    NoCredentials,
    /// Refused; the reason is a fixed text (safe in a header: no quote, no backslash).
    Invalid(&'static str),
    /// The key set cannot be read: not the client's fault.
    Unavailable(String),
}

use Denied::Invalid;

/// Checks the request's `Authorization` values at time `now`; the token's subject when it is
/// valid.
fn check(config: &Config, authorization: &[Vec<u8>], now: u64) -> Result<String, Denied> {
    let value = match authorization {
        [] => return Err(Denied::NoCredentials),
        [one] => one,
        _ => return Err(Invalid("more than one Authorization header")),
    };
    let value =
        std::str::from_utf8(value).map_err(|_| Invalid("malformed Authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(Invalid("expected Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Invalid("expected Authorization: Bearer <token>"));
    }
    let token = token.trim();
    if token.len() > MAX_TOKEN {
        return Err(Invalid("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid("the token is not a signed JWT (three parts)"));
    };
    let header = decode_object(header_b64).ok_or(Invalid("malformed token header"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| Invalid("malformed token signature"))?;
    if header.contains_key("crit") {
        return Err(Invalid("the token has critical extensions"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .filter(|alg| config.algorithms.contains(alg))
        .ok_or(Invalid("the token's algorithm is not accepted"))?;

    // Header and payload exactly as sent: that is what was signed.
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    match alg {
        Alg::Hs256 => {
            let secret = config
                .secret
                .as_deref()
                .ok_or(Invalid("HS256 is not accepted"))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret)
                .map_err(|_| Invalid("HS256 is not accepted"))?;
            mac.update(signed.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(&signature)
                .map_err(|_| Invalid("the signature does not verify"))?;
        }
        Alg::Rs256 => {
            let kid = header
                .get("kid")
                .and_then(Value::as_str)
                .ok_or(Invalid("the token names no key (kid)"))?;
            let key = rsa_key(config, kid)?;
            let signature = Signature::try_from(signature.as_slice())
                .map_err(|_| Invalid("the signature does not verify"))?;
            VerifyingKey::<Sha256>::new(key)
                .verify(signed.as_bytes(), &signature)
                .map_err(|_| Invalid("the signature does not verify"))?;
        }
    }

    // Only now, with the signature checked, do the claims mean anything.
    let claims = decode_object(payload_b64).ok_or(Invalid("malformed token payload"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(Invalid("the token has no expiry (exp)"))?;
    if (now as f64) > exp + config.leeway as f64 {
        return Err(Invalid("the token has expired"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().ok_or(Invalid("malformed nbf claim"))?;
        if (now as f64) + (config.leeway as f64) < nbf {
            return Err(Invalid("the token is not valid yet"));
        }
    }
    if let Some(issuer) = &config.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(Invalid("the token is from another issuer"));
    }
    if let Some(audience) = &config.audience {
        let matches = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !matches {
            return Err(Invalid("the token is for another audience"));
        }
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty())
        .ok_or(Invalid("the token has no subject (sub)"))?;
    if subject.len() > MAX_SUBJECT || subject.chars().any(char::is_control) {
        return Err(Invalid("the token's subject is not usable"));
    }
    Ok(subject.to_string())
}

/// A base64url JSON object, as a JWT's header and payload are.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The RSA public key `kid` of the JWKS file: an `RSA` key, for signatures, for RS256 when it
/// says which algorithm, of at least 2048 bits.
fn rsa_key(config: &Config, kid: &str) -> Result<RsaPublicKey, Denied> {
    let path = config
        .jwks_file
        .as_deref()
        .ok_or(Invalid("RS256 is not accepted"))?;
    let jwks = read_jwks(path).map_err(Denied::Unavailable)?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| Denied::Unavailable(format!("{path}: no `keys` list")))?;
    let jwk = keys
        .iter()
        .find(|key| key.get("kid").and_then(Value::as_str) == Some(kid))
        .ok_or(Invalid("unknown key id (kid)"))?;
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("RSA")
        || field("use").is_some_and(|u| u != "sig")
        || field("alg").is_some_and(|a| a != "RS256")
    {
        return Err(Invalid("the key (kid) is not an RS256 signing key"));
    }
    let number = |name: &str| {
        field(name)
            .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
            .map(|bytes| BigUint::from_bytes_be(&bytes))
            .ok_or_else(|| {
                Denied::Unavailable(format!("{path}: key {kid:?} has no valid `{name}`"))
            })
    };
    let key = RsaPublicKey::new(number("n")?, number("e")?)
        .map_err(|error| Denied::Unavailable(format!("{path}: key {kid:?}: {error}")))?;
    if rsa::traits::PublicKeyParts::size(&key) * 8 < MIN_RSA_BITS {
        return Err(Denied::Unavailable(format!(
            "{path}: key {kid:?} is shorter than {MIN_RSA_BITS} bits"
        )));
    }
    Ok(key)
}

fn read_jwks(path: &str) -> Result<Value, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|error| format!("{path}: {error}"))?;
    let mut text = Vec::new();
    file.take(MAX_JWKS + 1)
        .read_to_end(&mut text)
        .map_err(|error| format!("{path}: {error}"))?;
    if text.len() as u64 > MAX_JWKS {
        return Err(format!("{path}: larger than {MAX_JWKS} bytes"));
    }
    serde_json::from_slice(&text).map_err(|error| format!("{path}: {error}"))
}
