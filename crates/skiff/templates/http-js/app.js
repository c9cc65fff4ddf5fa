// {{app-name}}: a `wasi:http` component in JavaScript. skiff runs it in a fresh sandbox for
// every request; it reaches no file, host or variable that skiff.toml does not grant.

import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.12';

// `blocking-write-and-flush` takes at most 4096 bytes per call.
const WRITE_CHUNK = 4096;
const encoder = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    const path = request.pathWithQuery() ?? '/';
    const method = request.method();
    const name = method.tag === 'other' ? method.val : method.tag.toUpperCase();
    respond(responseOut, 200, 'text/plain; charset=utf-8', `Hello from {{app-name}}! You asked for ${name} ${path}\n`);
  },
};

// Sends a response: the head first, then the body, then its end.
function respond(responseOut, status, contentType, text) {
  const payload = encoder.encode(text);
  const response = new OutgoingResponse(Fields.fromList([['content-type', encoder.encode(contentType)]]));
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
  const stream = body.write();
  for (let start = 0; start < payload.length; start += WRITE_CHUNK) {
    stream.blockingWriteAndFlush(payload.subarray(start, start + WRITE_CHUNK));
  }
  stream[Symbol.dispose](); // a child of `body`: it goes first
  OutgoingBody.finish(body, undefined);
}
