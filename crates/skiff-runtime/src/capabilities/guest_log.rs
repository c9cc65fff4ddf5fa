//! Guest stdout and stderr, line by line, into skiff's log, each line tagged with app,
//! component and request id. A guest cannot flood the terminal with partial lines: a line
//! longer than [`MAX_LINE`] is logged in pieces.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::InstanceIdentity;

const MAX_LINE: usize = 16 * 1024;

/// One line of guest output (stdout, stderr or a wasi:logging record), as a [`LogSink`] gets
/// it.
#[derive(Debug)]
pub struct GuestOutput<'a> {
    pub app: &'a str,
    pub component: &'a str,
    pub request_id: u64,
    pub trace_id: opentelemetry::trace::TraceId,
    /// `stdout`, `stderr`, or `log` for wasi:logging.
    pub stream: &'static str,
    /// The wasi:logging level, for `log` lines.
    pub level: Option<&'static str>,
    pub message: &'a str,
}

/// Receives every line a guest outputs, besides skiff's own log: how a multi-tenant host
/// gives each app its own log stream. It runs on the guest's task, so it must not block.
#[derive(Clone)]
pub struct LogSink(Arc<dyn Fn(&GuestOutput<'_>) + Send + Sync>);

impl LogSink {
    pub fn new(sink: impl Fn(&GuestOutput<'_>) + Send + Sync + 'static) -> Self {
        LogSink(Arc::new(sink))
    }

    pub(crate) fn send(&self, line: &GuestOutput<'_>) {
        (self.0)(line)
    }
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

#[derive(Clone, Copy, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Routes a sandbox's stdout and stderr to the log. The handles returned retag them when a
/// reused instance serves its next request.
pub(crate) fn attach(builder: &mut WasiCtxBuilder, identity: &InstanceIdentity) -> GuestOutputs {
    let outputs = GuestOutputs([
        GuestLog::new(identity.clone(), Stream::Stdout),
        GuestLog::new(identity.clone(), Stream::Stderr),
    ]);
    builder.stdout(outputs.0[0].clone());
    builder.stderr(outputs.0[1].clone());
    outputs
}

/// A sandbox's stdout and stderr, as its host state holds them.
pub(crate) struct GuestOutputs([GuestLog; 2]);

impl GuestOutputs {
    /// Emits a partial last line as it is: the request that wrote it is over.
    pub(crate) fn flush(&self) {
        for output in &self.0 {
            let mut buffer = output.shared.lock().unwrap_or_else(|e| e.into_inner());
            if !buffer.partial.is_empty() {
                buffer.emit();
            }
        }
    }

    /// What follows is output of another request: new lines carry `identity`.
    pub(crate) fn retag(&self, identity: &InstanceIdentity) {
        self.flush();
        for output in &self.0 {
            let mut buffer = output.shared.lock().unwrap_or_else(|e| e.into_inner());
            buffer.identity = identity.clone();
        }
    }
}

/// One of a sandbox's output streams. WASI may hand out several handles to the same stream;
/// they share the partial line so that output stays in order.
#[derive(Clone)]
struct GuestLog {
    shared: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    identity: InstanceIdentity,
    stream: Stream,
    partial: Vec<u8>,
}

impl GuestLog {
    fn new(identity: InstanceIdentity, stream: Stream) -> Self {
        GuestLog {
            shared: Arc::new(Mutex::new(LineBuffer {
                identity,
                stream,
                partial: Vec::new(),
            })),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut buffer = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        buffer.push(bytes);
    }
}

impl LineBuffer {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..newline]);
            self.emit();
            bytes = &bytes[newline + 1..];
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            self.emit();
            self.partial = rest;
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        tracing::info!(
            target: "guest",
            app = %self.identity.app,
            component = %self.identity.component,
            request_id = self.identity.request_id,
            trace_id = %self.identity.trace_id,
            stream = self.stream.name(),
            "{line}"
        );
        if let Some(sink) = &self.identity.log_sink {
            sink.send(&GuestOutput {
                app: &self.identity.app,
                component: &self.identity.component,
                request_id: self.identity.request_id,
                trace_id: self.identity.trace_id,
                stream: self.stream.name(),
                level: None,
                message: line,
            });
        }
        self.partial.clear();
    }
}

impl Drop for LineBuffer {
    /// A last line without a newline is still output.
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        GuestLog::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
