// Skiff's C test guest: a `wasi:http/proxy` component built by clang against wasi-libc, with
// bindings from `wit-bindgen c` and linked into a component by wasm-component-ld (the same
// toolchain as `skiff new http-c`). It is an ordinary C HTTP component, the kind
// `wasmtime serve` runs, so the host's tests can check that Skiff serves it unchanged:
//
// * `/echo` (any method): 200 with the request body read to its end and sent back;
//   `content-type` is the request's, or `application/octet-stream` when it has none.
// * any other path: 200, `content-type: text/plain`,
//   body `hello from c, path=<path-with-query>\n`.
//
// Every response also carries `x-guest: c`.
//
// Build: scripts/build-polyglot-guests.sh c.
#include <stdlib.h>
#include <string.h>

#include "http_app.h"

// `blocking-write-and-flush` accepts at most 4096 bytes per call.
#define WRITE_CHUNK 4096
#define READ_CHUNK (64 * 1024)

typedef struct {
  uint8_t *data;
  size_t len;
} bytes_t;

static void append_header(wasi_http_types_own_fields_t fields, const char *name,
                          const uint8_t *value, size_t value_len) {
  wasi_http_types_field_name_t field_name;
  http_app_string_set(&field_name, name);
  wasi_http_types_field_value_t field_value = {(uint8_t *)value, value_len};
  wasi_http_types_header_error_t error;
  wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &field_name,
                                       &field_value, &error);
}

// Reads the whole request body; false if it could not be read (or memory ran out).
static bool read_body(wasi_http_types_borrow_incoming_request_t request, bytes_t *out) {
  out->data = NULL;
  out->len = 0;
  wasi_http_types_own_incoming_body_t body;
  if (!wasi_http_types_method_incoming_request_consume(request, &body)) {
    return false;
  }
  wasi_http_types_own_input_stream_t stream;
  if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                   &stream)) {
    wasi_http_types_incoming_body_drop_own(body);
    return false;
  }
  bool ok = true;
  for (;;) {
    http_app_list_u8_t chunk;
    wasi_io_streams_stream_error_t error;
    if (!wasi_io_streams_method_input_stream_blocking_read(
            wasi_io_streams_borrow_input_stream(stream), READ_CHUNK, &chunk, &error)) {
      ok = error.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED;
      wasi_io_streams_stream_error_free(&error);
      break;
    }
    uint8_t *grown = realloc(out->data, out->len + chunk.len + 1);
    if (grown == NULL) {
      http_app_list_u8_free(&chunk);
      ok = false;
      break;
    }
    memcpy(grown + out->len, chunk.ptr, chunk.len);
    out->data = grown;
    out->len += chunk.len;
    http_app_list_u8_free(&chunk);
  }
  // The stream is a child of the body: it goes first, then finishing consumes the body.
  wasi_io_streams_input_stream_drop_own(stream);
  wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
  return ok;
}

// Sends a response with a complete body: the head first, then the body, then finish.
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status,
                    wasi_http_types_own_fields_t headers, const uint8_t *payload, size_t len) {
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t borrowed =
      wasi_http_types_borrow_outgoing_response(response);
  wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
  wasi_http_types_own_outgoing_body_t body;
  wasi_http_types_method_outgoing_response_body(borrowed, &body);

  // Hand the response to the host before writing, so a large body streams out instead of
  // filling the pipe while nobody reads it.
  wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
  result.val.ok = response;
  wasi_http_types_static_response_outparam_set(out, &result);

  wasi_http_types_own_output_stream_t stream;
  if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body),
                                                 &stream)) {
    for (size_t done = 0; done < len;) {
      size_t chunk = len - done < WRITE_CHUNK ? len - done : WRITE_CHUNK;
      http_app_list_u8_t bytes = {(uint8_t *)payload + done, chunk};
      wasi_io_streams_stream_error_t error;
      if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
              wasi_io_streams_borrow_output_stream(stream), &bytes, &error)) {
        wasi_io_streams_stream_error_free(&error);
        break;
      }
      done += chunk;
    }
    wasi_io_streams_output_stream_drop_own(stream);
  }
  wasi_http_types_error_code_t error;
  if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &error)) {
    wasi_http_types_error_code_free(&error);
  }
}

static void echo(wasi_http_types_borrow_incoming_request_t request,
                 wasi_http_types_own_response_outparam_t out) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  // `headers` is a child resource of the request: it is dropped before the body is consumed.
  wasi_http_types_own_headers_t request_headers =
      wasi_http_types_method_incoming_request_headers(request);
  wasi_http_types_field_name_t name;
  http_app_string_set(&name, "content-type");
  wasi_http_types_list_field_value_t content_type;
  wasi_http_types_method_fields_get(wasi_http_types_borrow_fields(request_headers), &name,
                                    &content_type);
  if (content_type.len > 0) {
    append_header(headers, "content-type", content_type.ptr[0].ptr, content_type.ptr[0].len);
  } else {
    const char *octets = "application/octet-stream";
    append_header(headers, "content-type", (const uint8_t *)octets, strlen(octets));
  }
  wasi_http_types_list_field_value_free(&content_type);
  wasi_http_types_fields_drop_own(request_headers);
  append_header(headers, "x-guest", (const uint8_t *)"c", 1);

  bytes_t payload;
  if (read_body(request, &payload)) {
    respond(out, 200, headers, payload.data, payload.len);
  } else {
    const char *message = "could not read the request body\n";
    respond(out, 400, headers, (const uint8_t *)message, strlen(message));
  }
  free(payload.data);
}

static void greet(const http_app_string_t *path_with_query,
                  wasi_http_types_own_response_outparam_t out) {
  static const char prefix[] = "hello from c, path=";
  size_t len = sizeof prefix - 1 + path_with_query->len + 1;
  uint8_t *payload = malloc(len);
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  append_header(headers, "content-type", (const uint8_t *)"text/plain", strlen("text/plain"));
  append_header(headers, "x-guest", (const uint8_t *)"c", 1);
  if (payload == NULL) {
    respond(out, 500, headers, NULL, 0);
    return;
  }
  memcpy(payload, prefix, sizeof prefix - 1);
  memcpy(payload + sizeof prefix - 1, path_with_query->ptr, path_with_query->len);
  payload[len - 1] = '\n';
  respond(out, 200, headers, payload, len);
  free(payload);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_borrow_incoming_request_t borrowed =
      wasi_http_types_borrow_incoming_request(request);
  http_app_string_t path_with_query;
  if (!wasi_http_types_method_incoming_request_path_with_query(borrowed, &path_with_query)) {
    http_app_string_dup(&path_with_query, "/");
  }
  size_t path_len = path_with_query.len;
  const uint8_t *query = memchr(path_with_query.ptr, '?', path_with_query.len);
  if (query != NULL) {
    path_len = (size_t)(query - path_with_query.ptr);
  }

  if (path_len == 5 && memcmp(path_with_query.ptr, "/echo", 5) == 0) {
    echo(borrowed, response_out);
  } else {
    greet(&path_with_query, response_out);
  }
  http_app_string_free(&path_with_query);
  wasi_http_types_incoming_request_drop_own(request);
}
