// {{app-name}}: an HTTP component in C. skiff (or `wasmtime serve`) calls
// exports_wasi_http_incoming_handler_handle once per request, each time in a fresh sandbox;
// http_app.h is generated from wit/ by `wit-bindgen c` (see the Makefile).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_app.h"

static const char *const METHOD_NAMES[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                           "CONNECT", "OPTIONS", "TRACE", "PATCH"};

// Answers `status` with `body` as text; a failure to send is the host's to report (the client
// gets a 500), so there is nothing more to do about it here.
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status,
                    const char *body) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_field_name_t name;
  http_app_string_set(&name, "content-type");
  wasi_http_types_field_value_t value = {(uint8_t *)"text/plain; charset=utf-8",
                                         strlen("text/plain; charset=utf-8")};
  wasi_http_types_header_error_t header_error;
  wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value,
                                       &header_error);

  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t borrowed =
      wasi_http_types_borrow_outgoing_response(response);
  wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
  wasi_http_types_own_outgoing_body_t outgoing_body;
  wasi_http_types_method_outgoing_response_body(borrowed, &outgoing_body);

  // The head goes out first; the body streams after it.
  wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
  result.val.ok = response;
  wasi_http_types_static_response_outparam_set(out, &result);

  wasi_http_types_own_output_stream_t stream;
  if (wasi_http_types_method_outgoing_body_write(
          wasi_http_types_borrow_outgoing_body(outgoing_body), &stream)) {
    // blocking-write-and-flush takes at most 4096 bytes a call.
    size_t len = strlen(body);
    for (size_t done = 0; done < len;) {
      size_t chunk = len - done < 4096 ? len - done : 4096;
      http_app_list_u8_t bytes = {(uint8_t *)body + done, chunk};
      wasi_io_streams_stream_error_t error;
      if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
              wasi_io_streams_borrow_output_stream(stream), &bytes, &error)) {
        break;
      }
      done += chunk;
    }
    wasi_io_streams_output_stream_drop_own(stream);
  }
  wasi_http_types_error_code_t finish_error;
  wasi_http_types_static_outgoing_body_finish(outgoing_body, NULL, &finish_error);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t response_out) {
  wasi_http_types_borrow_incoming_request_t borrowed =
      wasi_http_types_borrow_incoming_request(request);

  wasi_http_types_method_t method;
  wasi_http_types_method_incoming_request_method(borrowed, &method);
  const char *method_name = "?";
  int method_len = 1;
  if (method.tag == WASI_HTTP_TYPES_METHOD_OTHER) {
    method_name = (const char *)method.val.other.ptr;
    method_len = (int)method.val.other.len;
  } else if (method.tag < sizeof METHOD_NAMES / sizeof METHOD_NAMES[0]) {
    method_name = METHOD_NAMES[method.tag];
    method_len = (int)strlen(method_name);
  }

  http_app_string_t path = {(uint8_t *)"/", 1};
  bool has_path = wasi_http_types_method_incoming_request_path_with_query(borrowed, &path);

  char *body = NULL;
  if (asprintf(&body, "Hello from {{app-name}}! You asked for %.*s %.*s\n", method_len,
               method_name, (int)path.len, (const char *)path.ptr) < 0) {
    body = NULL;
  }
  respond(response_out, body ? 200 : 500, body ? body : "out of memory\n");

  free(body);
  if (has_path) {
    http_app_string_free(&path);
  }
  wasi_http_types_method_free(&method);
  wasi_http_types_incoming_request_drop_own(request);
}
