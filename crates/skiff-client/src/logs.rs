//! [`LogStream`]: an app's guest output as it arrives, one NDJSON line at a time.

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::Response;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::io::StreamReader;

use crate::ClientError;
use crate::client::transport;
use crate::resolve::Server;

type Body = StreamReader<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, Bytes>;

/// The lines of `GET /v1/apps/NAME/logs`, each normally one
/// [`LogLine`](skiff_server::api::LogLine) as JSON.
pub struct LogStream {
    // Bytes, not `LinesCodec`'s strings: that codec ends the stream at a line that is not
    // UTF-8, where showing the line as it came is more use to a person.
    lines: FramedRead<Body, AnyDelimiterCodec>,
    server: Server,
}

impl LogStream {
    pub(crate) fn new(response: Response, server: Server) -> LogStream {
        let body = response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed();
        let codec = AnyDelimiterCodec::new(b"\n".to_vec(), Vec::new());
        LogStream {
            lines: FramedRead::new(StreamReader::new(body), codec),
            server,
        }
    }

    /// The next line, without its `\n` (or `\r\n`); blank lines are skipped. `None` once the
    /// server ended the stream (the end of the tail when not following, or the server
    /// stopping); a last line without a newline still comes before that.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, ClientError> {
        while let Some(line) = self.lines.next().await {
            let mut line = line.map_err(|e| self.broke(e))?;
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }

    fn broke(&self, error: AnyDelimiterCodecError) -> ClientError {
        let reason = match error {
            AnyDelimiterCodecError::Io(io) => {
                match io.into_inner().map(|e| e.downcast::<reqwest::Error>()) {
                    Some(Ok(error)) => transport(&self.server, *error).to_string(),
                    Some(Err(other)) => other.to_string(),
                    None => "the connection failed".to_string(),
                }
            }
            other => other.to_string(),
        };
        ClientError::LogStreamBroke(reason)
    }
}
