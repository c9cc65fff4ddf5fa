"""Skiff's Python test guest: a `wasi:http/proxy` component built by componentize-py.

It is an ordinary componentize-py HTTP app, the kind `wasmtime serve` runs, so the host's
tests can check that Skiff serves it unchanged:

* `/echo` (any method): 200 with the request body read to its end and sent back;
  `content-type` is the request's, or `application/octet-stream` when it has none.
* any other path: 200, `content-type: text/plain`,
  body `hello from python, path=<path-with-query>\n`.

Every response also carries `x-guest: python`.

Build: scripts/build-polyglot-guests.sh (componentize-py -d wit -w http-guest componentize app).
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# `blocking-write-and-flush` accepts at most 4096 bytes per call.
WRITE_CHUNK = 4096
READ_CHUNK = 64 * 1024


def read_body(request: IncomingRequest) -> bytes:
    """Reads the whole request body."""
    body = request.consume()
    chunks = []
    with body.stream() as stream:
        while True:
            try:
                chunk = stream.blocking_read(READ_CHUNK)
            except Err as err:
                if isinstance(err.value, StreamError_Closed):
                    break
                raise
            chunks.append(chunk)
    # The stream (a child of the body) is dropped above; finishing consumes the body.
    with IncomingBody.finish(body):
        pass
    return b"".join(chunks)


def respond(response_out: ResponseOutparam, status: int, headers, payload: bytes) -> None:
    """Sends a response with a complete body: headers first, then the body, then finish."""
    response = OutgoingResponse(Fields.from_list(headers))
    response.set_status_code(status)
    body = response.body()
    # Hand the response to the host before writing, so a large body can stream out
    # instead of filling the pipe while nobody reads it.
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        for start in range(0, len(payload), WRITE_CHUNK):
            stream.blocking_write_and_flush(payload[start : start + WRITE_CHUNK])
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path_with_query = request.path_with_query() or "/"
        path = path_with_query.split("?", 1)[0]

        if path == "/echo":
            # `headers` is a child resource of the request: drop it before the request goes.
            with request.headers() as fields:
                content_type = fields.get("content-type")
            payload = read_body(request)
            headers = [
                ("content-type", content_type[0] if content_type else b"application/octet-stream"),
                ("x-guest", b"python"),
            ]
            respond(response_out, 200, headers, payload)
        else:
            payload = f"hello from python, path={path_with_query}\n".encode("utf-8")
            headers = [("content-type", b"text/plain"), ("x-guest", b"python")]
            respond(response_out, 200, headers, payload)
