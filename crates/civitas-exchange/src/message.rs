//! Messages between gateways. A request or a response travels as a sequence of frames: a
//! head (the method, path and headers, or the status and headers), the body in data frames,
//! and an end frame with the sender's Ed25519 signature. Signing at the end lets a body of
//! any size stream through with flat memory: the receiver forwards it as it arrives and
//! breaks the stream off if the signature does not verify. A body that ends within the
//! receiver's buffer (almost every call) is verified before anything is passed on.
//!
//! A frame is one byte of kind, four bytes of length (big-endian) and the payload.
//!
//! - The request's signature covers its X-Road request hash ([`crate::protocol::RequestHash`]
//!   over the head's method, path and headers, and the body), so it binds exactly what the
//!   client sent.
//! - The response's end frame carries the request hash as the provider's gateway computed
//!   it (the calling gateway checks it against its own) and a signature over that hash and a
//!   digest of the response's head and body.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::ExchangeError;

/// The content type of framed messages.
pub const CONTENT_TYPE: &str = "application/vnd.civitas.exchange-message";
/// The path gateways post messages to.
pub const PATH: &str = "/exchange/v1/message";

/// A head frame.
pub const HEAD: u8 = 1;
/// A piece of the body.
pub const DATA: u8 = 2;
/// The end, with the signature.
pub const END: u8 = 3;

/// The largest frame a reader accepts.
pub const MAX_FRAME: usize = 16 << 20;

/// A request's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    /// The HTTP method.
    pub method: String,
    /// The path and query, `/r1/…`.
    pub target: String,
    /// The headers as the provider is to receive them, in order.
    pub headers: Vec<(String, String)>,
    /// Whether the client sent a body.
    pub has_body: bool,
    /// The body's length, when the client gave it.
    pub content_length: Option<u64>,
}

/// A response's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The HTTP status.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
}

/// An end frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The X-Road request hash (base64 SHA-512) the signer computed.
    pub request_hash: String,
    /// Ed25519, base64url.
    pub signature: String,
}

/// One frame's bytes.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&frame_header(kind, payload.len()));
    out.extend_from_slice(payload);
    out
}

/// A frame's first five bytes, to send before a payload that is sent as it is (a body's
/// pieces are never copied into frames).
pub fn frame_header(kind: u8, len: usize) -> [u8; 5] {
    let n = (len as u32).to_be_bytes();
    [kind, n[0], n[1], n[2], n[3]]
}

/// A frame as JSON.
pub fn json_frame(kind: u8, value: &impl Serialize) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    frame(kind, &serde_json::to_vec(value).unwrap_or_default())
}

/// Reads frames out of a byte stream that arrives in pieces; a payload comes out as a view
/// of the bytes received, without another copy.
#[derive(Default)]
pub struct Decoder {
    buf: bytes::BytesMut,
}

impl Decoder {
    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(u8, bytes::Bytes)>, ExchangeError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if !(HEAD..=END).contains(&kind) || len > MAX_FRAME {
            return Err(ExchangeError::Invalid("a malformed message frame".into()));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        let mut whole = self.buf.split_to(5 + len);
        let payload = whole.split_off(5).freeze();
        Ok(Some((kind, payload)))
    }

    /// Whether bytes of an unfinished frame are left.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn request_message(request_hash: &str) -> Vec<u8> {
    format!("civitas-exchange/request\n{request_hash}").into_bytes()
}

fn response_message(request_hash: &str, response_digest: &str) -> Vec<u8> {
    format!("civitas-exchange/response\n{request_hash}\n{response_digest}").into_bytes()
}

/// Signs a request by its request hash.
pub fn sign_request(key: &SigningKey, request_hash: &str) -> End {
    End {
        request_hash: request_hash.into(),
        signature: URL_SAFE_NO_PAD.encode(key.sign(&request_message(request_hash)).to_bytes()),
    }
}

/// Signs a response: the request hash the provider's gateway computed and the response's
/// digest.
pub fn sign_response(key: &SigningKey, request_hash: &str, response_digest: &str) -> End {
    End {
        request_hash: request_hash.into(),
        signature: URL_SAFE_NO_PAD.encode(
            key.sign(&response_message(request_hash, response_digest))
                .to_bytes(),
        ),
    }
}

fn check(key: &VerifyingKey, message: &[u8], signature: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .is_some_and(|s| {
            key.verify(message, &ed25519_dalek::Signature::from_bytes(&s))
                .is_ok()
        })
}

/// Whether a request's end frame is the sender's signature over `request_hash`, the hash
/// the receiver computed itself.
pub fn verify_request(key: &VerifyingKey, request_hash: &str, end: &End) -> bool {
    end.request_hash == request_hash && check(key, &request_message(request_hash), &end.signature)
}

/// Whether a response's end frame is the sender's signature over the response digest the
/// receiver computed and the request hash the receiver computed for its own request.
pub fn verify_response(
    key: &VerifyingKey,
    request_hash: &str,
    response_digest: &str,
    end: &End,
) -> bool {
    end.request_hash == request_hash
        && check(
            key,
            &response_message(request_hash, response_digest),
            &end.signature,
        )
}

/// The digest of a response: SHA-512 of the head frame's payload, then of the body, joined.
pub struct ResponseDigest {
    head: [u8; 64],
    body: Sha512,
}

impl ResponseDigest {
    /// Starts with the head frame's payload.
    pub fn new(head: &[u8]) -> ResponseDigest {
        ResponseDigest {
            head: Sha512::digest(head).into(),
            body: Sha512::new(),
        }
    }

    /// Adds a piece of the body.
    pub fn body(&mut self, bytes: &[u8]) {
        self.body.update(bytes);
    }

    /// The digest, base64.
    pub fn finish(&self) -> String {
        let mut h = Sha512::new();
        h.update(self.head);
        h.update(self.body.clone().finalize());
        STANDARD.encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let mut bytes = json_frame(
            HEAD,
            &ResponseHead {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
            },
        );
        bytes.extend(frame(DATA, b"hello"));
        bytes.extend(frame(DATA, b""));
        bytes.extend(frame(END, b"{}"));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        let kinds: Vec<u8> = got.iter().map(|f| f.0).collect();
        assert_eq!(kinds, vec![HEAD, DATA, DATA, END]);
        assert_eq!(&got[1].1[..], b"hello");
        assert!(d.is_empty());

        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 1, 0]);
        assert!(d.next_frame().is_err(), "an unknown kind");
        let mut d = Decoder::default();
        d.push(&[DATA, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err(), "a frame over the limit");
    }

    #[test]
    fn signatures_bind_the_request_hash_and_the_response() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let end = sign_request(&a, "hash-1");
        assert!(verify_request(&a.verifying_key(), "hash-1", &end));
        assert!(!verify_request(&a.verifying_key(), "hash-2", &end));
        assert!(!verify_request(&b.verifying_key(), "hash-1", &end));

        let mut d = ResponseDigest::new(b"head");
        d.body(b"body");
        let digest = d.finish();
        let end = sign_response(&b, "hash-1", &digest);
        assert!(verify_response(&b.verifying_key(), "hash-1", &digest, &end));
        let mut other = ResponseDigest::new(b"head");
        other.body(b"bodY");
        assert!(!verify_response(
            &b.verifying_key(),
            "hash-1",
            &other.finish(),
            &end
        ));
        // The provider's gateway saw another request than the caller sent.
        assert!(!verify_response(
            &b.verifying_key(),
            "hash-2",
            &digest,
            &end
        ));
    }
}
