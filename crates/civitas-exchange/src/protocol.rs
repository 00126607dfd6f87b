//! The message rules of X-Road's REST protocol (PR-REST 1.0) that do not depend on an HTTP
//! library: which headers a gateway never passes on, how the request hash that binds a
//! response to its request is computed, and the errors a gateway raises itself.

use base64::Engine as _;
use civitas_ledger::event::hex;
use sha2::{Digest, Sha512};

/// The protocol version in request paths: `/r1/…`.
pub const VERSION: &str = "r1";

/// Headers a gateway never passes on, in either direction (compared in lower case):
/// hop-by-hop headers, those that reveal the origin host, and those it sets itself.
pub const FILTERED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "user-agent",
    "server",
    "expect",
    "content-length",
];

/// Request headers the client may not set (the gateway does, or they belong to answers).
pub const SET_ON_REQUEST: &[&str] = &[
    "x-road-request-id",
    "x-road-request-hash",
    "x-road-service",
    "x-road-error",
];

/// Response headers the provider's service may not set: the gateway sets these, an
/// `X-Road-Error` would pass the provider's answer off as the exchange's own, and cookies
/// would be set for the gateway's site.
pub const SET_ON_RESPONSE: &[&str] = &[
    "x-road-id",
    "x-road-client",
    "x-road-service",
    "x-road-request-id",
    "x-road-request-hash",
    "x-road-error",
    "set-cookie",
];

/// Whether a request header passes from the client to the provider's service.
pub fn passes_on_request(name: &str) -> bool {
    !listed(FILTERED, name) && !listed(SET_ON_REQUEST, name)
}

/// Whether a response header passes from the provider's service to the client.
pub fn passes_on_response(name: &str) -> bool {
    !listed(FILTERED, name) && !listed(SET_ON_RESPONSE, name)
}

/// Whether `name` is in `list`, in any case.
fn listed(list: &[&str], name: &str) -> bool {
    list.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// The digest of a request as X-Road computes it, fed as the request passes: first its
/// header part (method, raw path and query, then each forwarded header as `name:value`,
/// each line ending CRLF), then its body, streamed. The result is SHA-512 of the header
/// part, or, when there was a body, SHA-512 of (that digest ‖ SHA-512 of the body), in
/// standard base64.
#[derive(Clone)]
pub struct RequestHash {
    head: [u8; 64],
    body: Sha512,
    body_bytes: u64,
}

impl RequestHash {
    /// Starts with the request's header part. `path_and_query` is the path as received,
    /// still percent-encoded, with `?query` when there is one.
    pub fn new<'a>(
        method: &str,
        path_and_query: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> RequestHash {
        let mut head = Sha512::new();
        head.update(method.as_bytes());
        head.update(b"\r\n");
        head.update(path_and_query.as_bytes());
        head.update(b"\r\n");
        for (name, value) in headers {
            head.update(name.as_bytes());
            head.update(b":");
            head.update(value);
            head.update(b"\r\n");
        }
        RequestHash {
            head: head.finalize().into(),
            body: Sha512::new(),
            body_bytes: 0,
        }
    }

    /// Adds a piece of the body.
    pub fn body(&mut self, chunk: &[u8]) {
        self.body.update(chunk);
        self.body_bytes += chunk.len() as u64;
    }

    /// How many body bytes it has seen.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The header part's digest alone, hex (for the message log).
    pub fn head_hex(&self) -> String {
        hex(&self.head)
    }

    /// The body's digest so far, hex (for the message log).
    pub fn body_hex(&self) -> String {
        hex(&self.body.clone().finalize())
    }

    /// The `X-Road-Request-Hash` value.
    pub fn finish(&self) -> String {
        let digest: [u8; 64] = if self.body_bytes == 0 {
            self.head
        } else {
            let mut both = Sha512::new();
            both.update(self.head);
            both.update(self.body.clone().finalize());
            both.finalize().into()
        };
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

/// An error the exchange raises itself (not one the provider's service returned): its type
/// (`Client.…`, `Server.ClientProxy.…` or `Server.ServerProxy.…`) and a message. On the wire
/// it is `{"type", "message", "detail"}` with `X-Road-Error: <type>`, status 500 when the
/// type starts with `Server.` and 400 otherwise; `detail` is an id to find it in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The fault's type, such as `Server.ServerProxy.AccessDenied`.
    pub kind: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl Fault {
    /// A fault of the calling information system (400).
    pub fn client(code: &str, message: impl Into<String>) -> Fault {
        Fault {
            kind: format!("Client.{code}"),
            message: message.into(),
        }
    }

    /// A fault found by the client's gateway (500).
    pub fn client_proxy(code: &str, message: impl Into<String>) -> Fault {
        Fault {
            kind: format!("Server.ClientProxy.{code}"),
            message: message.into(),
        }
    }

    /// A fault found by the provider's gateway (500).
    pub fn server_proxy(code: &str, message: impl Into<String>) -> Fault {
        Fault {
            kind: format!("Server.ServerProxy.{code}"),
            message: message.into(),
        }
    }

    /// The HTTP status: 500 for `Server.*`, 400 otherwise.
    pub fn status(&self) -> u16 {
        if self.kind.starts_with("Server.") {
            500
        } else {
            400
        }
    }

    /// The JSON body, with `detail` the given id.
    pub fn body(&self, detail: &str) -> serde_json::Value {
        serde_json::json!({ "type": self.kind, "message": self.message, "detail": detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha512(parts: &[&[u8]]) -> [u8; 64] {
        let mut h = Sha512::new();
        for p in parts {
            h.update(p);
        }
        h.finalize().into()
    }

    #[test]
    fn the_request_hash_is_a_digest_of_the_header_part_and_the_bodys_digest() {
        let headers: [(&str, &[u8]); 2] = [
            ("x-road-client", b"TW/GOV/MODA/portal"),
            ("accept", b"application/json"),
        ];
        let part = b"POST\r\n/r1/TW/GOV/HRO/population/persons?q=1\r\nx-road-client:TW/GOV/MODA/portal\r\naccept:application/json\r\n";
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        // No body: the header part's digest alone.
        let h = RequestHash::new("POST", "/r1/TW/GOV/HRO/population/persons?q=1", headers);
        assert_eq!(h.finish(), b64(&sha512(&[part])));
        assert_eq!(h.finish().len(), 88);
        // A body, in pieces: the digest of both raw digests joined.
        let mut h = h;
        h.body(b"{\"a\":");
        h.body(b"1}");
        let expected = sha512(&[&sha512(&[part]), &sha512(&[b"{\"a\":1}"])]);
        assert_eq!(h.finish(), b64(&expected));
        assert_eq!(h.body_bytes(), 7);
    }

    #[test]
    fn hop_by_hop_and_gateway_headers_do_not_pass() {
        for h in [
            "Connection",
            "TE",
            "Host",
            "User-Agent",
            "Content-Length",
            "X-Road-Request-Hash",
        ] {
            assert!(!passes_on_request(h), "{h}");
        }
        for h in [
            "X-Road-Client",
            "X-Road-Id",
            "X-Road-UserId",
            "Authorization",
            "X-Powered-By",
        ] {
            assert!(passes_on_request(h), "{h}");
        }
        assert!(!passes_on_response("x-road-service"));
        assert!(!passes_on_response("Server"));
        assert!(passes_on_response("content-type"));
    }

    #[test]
    fn faults_take_their_status_from_their_type() {
        let f = Fault::server_proxy("AccessDenied", "Request is not allowed");
        assert_eq!(
            (f.status(), f.kind.as_str()),
            (500, "Server.ServerProxy.AccessDenied")
        );
        assert_eq!(Fault::client("BadRequest", "x").status(), 400);
        assert_eq!(f.body("id-1")["detail"], "id-1");
    }
}
