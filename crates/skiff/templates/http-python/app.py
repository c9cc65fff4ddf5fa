"""{{app-name}}: a `wasi:http` component in Python. skiff runs it in a fresh sandbox for every
request; it reaches no file, host or variable that skiff.toml does not grant."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# `blocking-write-and-flush` takes at most 4096 bytes per call.
WRITE_CHUNK = 4096


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        method = request.method()
        name = getattr(method, "value", None) or type(method).__name__.split("_")[-1].upper()
        text = f"Hello from {{app-name}}! You asked for {name} {path}\n"
        respond(response_out, 200, "text/plain; charset=utf-8", text.encode("utf-8"))


def respond(response_out: ResponseOutparam, status: int, content_type: str, payload: bytes) -> None:
    """Sends a response: the head first, then the body, then its end."""
    response = OutgoingResponse(Fields.from_list([("content-type", content_type.encode())]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        for start in range(0, len(payload), WRITE_CHUNK):
            stream.blocking_write_and_flush(payload[start : start + WRITE_CHUNK])
    OutgoingBody.finish(body, None)
