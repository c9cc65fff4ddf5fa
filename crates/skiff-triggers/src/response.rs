//! The end of a unit of work that a trigger started as a request: its response, read to the
//! end.

use http::Response;
use http_body_util::BodyExt;
use skiff_runtime::ResponseBody;

/// How much of a failure's body is kept to say why (skiff's own answers are short).
const WHY_BYTES: usize = 200;

/// Reads `response` to its end (the unit of work ends with its body: the guest may still be
/// writing it, in its instance). Returns its status and, for a failure, why: the start of a
/// non-2xx answer's body, or the error the body ended with.
pub(crate) async fn drain(response: Response<ResponseBody>) -> (u16, Option<String>) {
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref()
                    && !status.is_success()
                    && text.len() < WHY_BYTES
                {
                    text.extend_from_slice(&data[..data.len().min(WHY_BYTES - text.len())]);
                }
            }
            Err(err) => {
                return (
                    status.as_u16(),
                    Some(format!("the response body failed: {err}")),
                );
            }
        }
    }
    let text = String::from_utf8_lossy(&text).trim().to_string();
    (status.as_u16(), (!text.is_empty()).then_some(text))
}
