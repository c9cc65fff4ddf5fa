// Skiff's JavaScript test guest: a `wasi:http/proxy` component built by jco (ComponentizeJS,
// StarlingMonkey). It exports `wasi:http/incoming-handler` by hand (no fetch event), the kind of
// component `wasmtime serve` runs, so the host's tests can check that Skiff serves it unchanged:
//
// * `/echo` (any method): 200 with the request body read to its end and sent back;
//   `content-type` is the request's, or `application/octet-stream` when it has none.
// * any other path: 200, `content-type: text/plain`,
//   body `hello from javascript, path=<path-with-query>\n`.
//
// Every response also carries `x-guest: javascript`.
//
// Build: scripts/build-polyglot-guests.sh (jco componentize app.js --wit wit -n http-guest).

import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from 'wasi:http/types@0.2.12';

// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK = 4096;
const READ_CHUNK = 64n * 1024n;

const encoder = new TextEncoder();

// Reads the whole request body.
function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  const chunks = [];
  let total = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(READ_CHUNK);
    } catch (err) {
      if (err?.payload?.tag === 'closed') break;
      throw err;
    }
    chunks.push(chunk);
    total += chunk.length;
  }
  // The stream is a child of the body: drop it before finishing the body.
  stream[Symbol.dispose]();
  IncomingBody.finish(body)[Symbol.dispose]();

  const all = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

// Sends a response with a complete body: headers first, then the body, then finish.
function respond(responseOut, status, headers, payload) {
  const response = new OutgoingResponse(Fields.fromList(headers));
  response.setStatusCode(status);
  const body = response.body();
  // Hand the response to the host before writing, so a large body streams out instead of
  // filling the pipe while nobody reads it.
  ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
  const stream = body.write();
  for (let start = 0; start < payload.length; start += WRITE_CHUNK) {
    stream.blockingWriteAndFlush(payload.subarray(start, start + WRITE_CHUNK));
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

export const incomingHandler = {
  handle(request, responseOut) {
    const pathWithQuery = request.pathWithQuery() ?? '/';
    const path = pathWithQuery.split('?', 1)[0];

    if (path === '/echo') {
      // `headers` is a child resource of the request: drop it before the request goes.
      const fields = request.headers();
      const contentType = fields.get('content-type');
      fields[Symbol.dispose]();
      const payload = readBody(request);
      const headers = [
        ['content-type', contentType.length > 0 ? contentType[0] : encoder.encode('application/octet-stream')],
        ['x-guest', encoder.encode('javascript')],
      ];
      respond(responseOut, 200, headers, payload);
    } else {
      const payload = encoder.encode(`hello from javascript, path=${pathWithQuery}\n`);
      const headers = [
        ['content-type', encoder.encode('text/plain')],
        ['x-guest', encoder.encode('javascript')],
      ];
      respond(responseOut, 200, headers, payload);
    }
  },
};
