//! Answers skiff makes itself, rather than a guest or an upstream: a status and a line of
//! text saying why.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use skiff_runtime::ResponseBody;

/// A response made by skiff itself rather than a guest.
pub fn plain(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
