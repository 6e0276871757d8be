//! The little HTTP/1.1 the server writes itself (the admin endpoint; with feature `ws`,
//! the chat page and the answers to a WebSocket upgrade that is refused): whole
//! responses, after which the connection closes. Requests are read with httparse.

/// A response with `status` (e.g. `404 Not Found`), a body, and `extra_headers` (each
/// ending in CRLF) besides the content type, length and `Connection: close`.
pub(crate) fn response(
    status: &str,
    content_type: &str,
    body: &[u8],
    extra_headers: &str,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
