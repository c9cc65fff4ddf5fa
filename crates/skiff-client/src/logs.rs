//! [`LogStream`]: an app's guest output as it arrives, one NDJSON line at a time.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use reqwest::Response;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead};
use tokio_util::io::StreamReader;

use crate::ClientError;
use crate::resolve::Server;

type Body = StreamReader<BoxStream<'static, std::io::Result<Bytes>>, Bytes>;

/// The lines of `GET /v1/apps/NAME/logs`, each normally one
/// [`LogLine`](skiff_api::LogLine) as JSON.
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
        LogStream::of(body, server)
    }

    fn of(body: BoxStream<'static, std::io::Result<Bytes>>, server: Server) -> LogStream {
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
                    Some(Ok(error)) => ClientError::transport(
                        self.server.url(),
                        self.server.from(),
                        self.server.ca_cert(),
                        *error,
                    )
                    .to_string(),
                    Some(Err(other)) => other.to_string(),
                    None => "the connection failed".to_string(),
                }
            }
            other => other.to_string(),
        };
        ClientError::LogStreamBroke(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerFrom;

    fn stream(chunks: Vec<std::io::Result<Bytes>>) -> LogStream {
        let server = Server::new("http://h:3001", ServerFrom::Default).unwrap();
        LogStream::of(futures_util::stream::iter(chunks).boxed(), server)
    }

    #[tokio::test]
    async fn log_streams_split_into_lines_however_the_chunks_fall() {
        let chunks = ["{\"a\":", "1}\n{\"b\"\r\n\n  \n:2", "\r\n", "last"];
        let mut lines = stream(chunks.map(|c| Ok(Bytes::from(c))).into());
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            got.push(String::from_utf8(line.to_vec()).unwrap());
        }
        assert_eq!(got, ["{\"a\":1}", "{\"b\"", ":2", "last"]);
    }

    #[tokio::test]
    async fn a_broken_stream_says_so() {
        let mut lines = stream(vec![
            Ok(Bytes::from("one\n")),
            Err(std::io::Error::other("reset by peer")),
        ]);
        let first = lines.next_line().await.unwrap();
        assert_eq!(first.as_deref(), Some(&b"one"[..]));
        let err = lines.next_line().await.unwrap_err().to_string();
        assert_eq!(err, "the log stream broke off: reset by peer");
    }
}
