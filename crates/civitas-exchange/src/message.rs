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
//!
//! Signatures are batched, as X-Road's security servers batch theirs: the messages a gateway
//! has ready to sign at the same moment become the leaves of an RFC 6962 Merkle tree, and one
//! Ed25519 signature covers the tree's size and root. Each end frame carries that signature,
//! the root, and its message's inclusion proof, so it verifies on its own; a receiver that has
//! already verified a batch's signature checks only the proof for the others. A message signed
//! when nothing else is waiting is a batch of one (its root is its own leaf hash), so batching
//! adds no wait: it only happens when a gateway is busy.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use civitas_ledger::tree::tlog::{self, Hash};
use civitas_ledger::tree::{Frontier, Prefetched};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use tokio::sync::{mpsc, oneshot};

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
    /// The body's length, when the whole body follows at once (the receiver then knows it
    /// has all of it before the end frame).
    #[serde(default)]
    pub length: Option<u64>,
}

/// An end frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The X-Road request hash (base64 SHA-512) the signer computed.
    pub request_hash: String,
    /// The number of messages signed together.
    pub batch_size: u64,
    /// This message's place among them.
    pub batch_index: u64,
    /// The root of their Merkle tree, base64.
    pub batch_root: String,
    /// This message's inclusion proof in that tree, base64 hashes.
    pub batch_proof: Vec<String>,
    /// Ed25519 over the batch's size and root, base64url.
    pub signature: String,
}

/// One message's share of a batch signature.
#[derive(Debug, Clone)]
pub struct BatchSignature {
    size: u64,
    index: u64,
    root: Hash,
    proof: Vec<Hash>,
    signature: [u8; 64],
}

impl BatchSignature {
    fn end(self, request_hash: &str) -> End {
        End {
            request_hash: request_hash.into(),
            batch_size: self.size,
            batch_index: self.index,
            batch_root: STANDARD.encode(self.root.0),
            batch_proof: self.proof.iter().map(|h| STANDARD.encode(h.0)).collect(),
            signature: URL_SAFE_NO_PAD.encode(self.signature),
        }
    }
}

/// What the signature of a batch covers: its size and root.
fn batch_message(size: u64, root: &Hash) -> Vec<u8> {
    format!(
        "civitas-exchange/batch\n{size}\n{}",
        STANDARD.encode(root.0)
    )
    .into_bytes()
}

/// Signs messages together: one signature over the Merkle tree of their leaf hashes, and
/// each message's inclusion proof, in order.
pub fn sign_batch(key: &SigningKey, messages: &[Vec<u8>]) -> Vec<BatchSignature> {
    let mut tree = Frontier::empty();
    let mut stored = Vec::with_capacity(messages.len() * 2);
    for m in messages {
        tree.append(tlog::record_hash(m), &mut stored);
    }
    let size = tree.size();
    let root = tree.root();
    let signature = key.sign(&batch_message(size, &root)).to_bytes();
    let hashes = Prefetched(stored.into_iter().collect());
    (0..size)
        .map(|index| BatchSignature {
            size,
            index,
            root,
            // Every hash a proof needs is in `hashes`: the tree was built from them.
            proof: tlog::prove_record(size, index, &hashes).unwrap_or_default(),
            signature,
        })
        .collect()
}

/// The most messages one signature covers.
const MAX_BATCH: usize = 1024;

type SignRequest = (Vec<u8>, oneshot::Sender<BatchSignature>);

/// A gateway's signer: a task that signs what is waiting when it comes round, all in one
/// batch.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    queue: mpsc::UnboundedSender<SignRequest>,
}

impl Signer {
    /// Starts the signing task on the current Tokio runtime.
    pub fn start(key: SigningKey) -> Signer {
        let (queue, mut rx) = mpsc::unbounded_channel::<SignRequest>();
        let signing = key.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Let the tasks that are ready run first: on a busy gateway some of them
                // reach their signature too, and join this batch. On an idle one this
                // returns at once.
                tokio::task::yield_now().await;
                let mut waiting = vec![first];
                while waiting.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => waiting.push(r),
                        Err(_) => break,
                    }
                }
                let (messages, replies): (Vec<Vec<u8>>, Vec<_>) = waiting.into_iter().unzip();
                for (reply, signed) in replies.into_iter().zip(sign_batch(&signing, &messages)) {
                    let _ = reply.send(signed);
                }
            }
        });
        Signer { key, queue }
    }

    /// Signs the message `make` makes in the next batch (alone, made again, should the task
    /// be gone: no copy is kept for that rare case).
    async fn sign(&self, make: impl Fn() -> Vec<u8>) -> BatchSignature {
        let (reply, answer) = oneshot::channel();
        if self.queue.send((make(), reply)).is_ok()
            && let Ok(signed) = answer.await
        {
            return signed;
        }
        alone(&self.key, make())
    }

    /// Signs a request by its request hash.
    pub async fn sign_request(&self, request_hash: &str) -> End {
        self.sign(|| request_message(request_hash))
            .await
            .end(request_hash)
    }

    /// Signs a response: the request hash the provider's gateway computed and the
    /// response's digest.
    pub async fn sign_response(&self, request_hash: &str, response_digest: &str) -> End {
        self.sign(|| response_message(request_hash, response_digest))
            .await
            .end(request_hash)
    }
}

fn alone(key: &SigningKey, message: Vec<u8>) -> BatchSignature {
    sign_batch(key, &[message]).remove(0)
}

/// The batches whose signatures this gateway has verified, so that another message of the
/// same batch needs only its inclusion proof checked. Bounded: the oldest are forgotten.
#[derive(Default)]
pub struct Verified {
    seen: Mutex<Seen>,
}

/// A verified batch: the key, the batch's size and root, and the signature.
type BatchId = [u8; 136];

#[derive(Default)]
struct Seen {
    ids: HashSet<BatchId>,
    order: VecDeque<BatchId>,
}

/// How many verified batches are remembered.
const REMEMBERED: usize = 4096;

impl Verified {
    /// Whether `end` is `key`'s signature over a batch that holds `message`.
    fn check(&self, key: &VerifyingKey, message: &[u8], end: &End) -> bool {
        // No batch is larger than a signer makes, nor a proof longer than its tree is deep:
        // anything else is refused before any work is spent on it.
        if end.batch_size == 0
            || end.batch_size > MAX_BATCH as u64
            || end.batch_proof.len() > MAX_BATCH.ilog2() as usize + 1
        {
            return false;
        }
        let decode = |b: &str| -> Option<Hash> {
            let v = STANDARD.decode(b).ok()?;
            Some(Hash(<[u8; 32]>::try_from(v).ok()?))
        };
        let Some(root) = decode(&end.batch_root) else {
            return false;
        };
        let Some(proof) = end
            .batch_proof
            .iter()
            .map(|h| decode(h))
            .collect::<Option<Vec<Hash>>>()
        else {
            return false;
        };
        let Some(signature) = URL_SAFE_NO_PAD
            .decode(&end.signature)
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
        else {
            return false;
        };
        if tlog::check_record(
            &proof,
            end.batch_size,
            root,
            end.batch_index,
            tlog::record_hash(message),
        )
        .is_err()
        {
            return false;
        }
        let mut id: BatchId = [0; 136];
        id[..32].copy_from_slice(key.as_bytes());
        id[32..40].copy_from_slice(&end.batch_size.to_be_bytes());
        id[40..72].copy_from_slice(&root.0);
        id[72..].copy_from_slice(&signature);
        if self.seen.lock().is_ok_and(|s| s.ids.contains(&id)) {
            return true;
        }
        let good = key
            .verify(
                &batch_message(end.batch_size, &root),
                &ed25519_dalek::Signature::from_bytes(&signature),
            )
            .is_ok();
        if good && let Ok(mut s) = self.seen.lock() {
            if s.ids.insert(id) {
                s.order.push_back(id);
            }
            while s.order.len() > REMEMBERED {
                if let Some(old) = s.order.pop_front() {
                    s.ids.remove(&old);
                }
            }
        }
        good
    }

    /// Whether a request's end frame is the sender's signature over `request_hash`, the
    /// hash the receiver computed itself.
    pub fn request(&self, key: &VerifyingKey, request_hash: &str, end: &End) -> bool {
        end.request_hash == request_hash && self.check(key, &request_message(request_hash), end)
    }

    /// Whether a response's end frame is the sender's signature over the response digest
    /// the receiver computed and the request hash the receiver computed for its own
    /// request.
    pub fn response(
        &self,
        key: &VerifyingKey,
        request_hash: &str,
        response_digest: &str,
        end: &End,
    ) -> bool {
        end.request_hash == request_hash
            && self.check(key, &response_message(request_hash, response_digest), end)
    }
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

/// Signs a request by its request hash, alone (a batch of one).
pub fn sign_request(key: &SigningKey, request_hash: &str) -> End {
    alone(key, request_message(request_hash)).end(request_hash)
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
                length: Some(5),
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

    #[tokio::test]
    async fn signatures_bind_the_request_hash_and_the_response() {
        let a = Signer::start(SigningKey::from_bytes(&[1; 32]));
        let b = Signer::start(SigningKey::from_bytes(&[2; 32]));
        let (ka, kb) = (a.key.verifying_key(), b.key.verifying_key());
        let v = Verified::default();
        let end = a.sign_request("hash-1").await;
        assert!(v.request(&ka, "hash-1", &end));
        assert!(!v.request(&ka, "hash-2", &end));
        assert!(!v.request(&kb, "hash-1", &end));
        // Signed alone, the same way.
        assert!(v.request(&ka, "hash-3", &sign_request(&a.key, "hash-3")));

        let mut d = ResponseDigest::new(b"head");
        d.body(b"body");
        let digest = d.finish();
        let end = b.sign_response("hash-1", &digest).await;
        assert!(v.response(&kb, "hash-1", &digest, &end));
        let mut other = ResponseDigest::new(b"head");
        other.body(b"bodY");
        assert!(!v.response(&kb, "hash-1", &other.finish(), &end));
        // The provider's gateway saw another request than the caller sent.
        assert!(!v.response(&kb, "hash-2", &digest, &end));
        // A response's signature is not a request's.
        assert!(!v.request(&kb, "hash-1", &end));
    }

    #[tokio::test]
    async fn messages_waiting_together_share_one_signature_and_each_proves_its_own_place() {
        let signer = Signer::start(SigningKey::from_bytes(&[3; 32]));
        let key = signer.key.verifying_key();
        // Fifty signatures asked for before the signing task runs: one batch.
        let calls = (0..50).map(|i| {
            let s = signer.clone();
            tokio::spawn(async move { s.sign_request(&format!("hash-{i}")).await })
        });
        let mut ends = Vec::new();
        for c in calls.collect::<Vec<_>>() {
            ends.push(c.await.unwrap());
        }
        assert!(ends.iter().all(|e| e.batch_size == 50), "one batch of 50");
        let roots: HashSet<&str> = ends.iter().map(|e| e.batch_root.as_str()).collect();
        assert_eq!(roots.len(), 1);
        let v = Verified::default();
        for (i, e) in ends.iter().enumerate() {
            assert!(v.request(&key, &format!("hash-{i}"), e), "message {i}");
        }
        assert_eq!(
            v.seen.lock().unwrap().order.len(),
            1,
            "the batch verified once"
        );

        // With the batch's signature already verified, each message still needs its own
        // proof: another message, a moved place, a changed proof or root all fail.
        assert!(!v.request(&key, "hash-1", &ends[2]));
        let mut moved = ends[3].clone();
        moved.batch_index = 4;
        assert!(!v.request(&key, "hash-3", &moved));
        let mut changed = ends[5].clone();
        changed.batch_proof[0] = STANDARD.encode([0u8; 32]);
        assert!(!v.request(&key, "hash-5", &changed));
        let mut rerooted = ends[6].clone();
        rerooted.batch_root = STANDARD.encode([0u8; 32]);
        assert!(!v.request(&key, "hash-6", &rerooted));
        let mut resized = ends[7].clone();
        resized.batch_size = 64;
        assert!(!v.request(&key, "hash-7", &resized));
        // Sizes and proofs no signer makes are refused before any work.
        for size in [0, MAX_BATCH as u64 + 1] {
            let mut odd = ends[8].clone();
            odd.batch_size = size;
            assert!(!v.request(&key, "hash-8", &odd), "size {size}");
        }
        let mut long = ends[9].clone();
        long.batch_proof = vec![STANDARD.encode([0u8; 32]); 12];
        assert!(!v.request(&key, "hash-9", &long));
        // A batch signature under another key does not verify, cached or not.
        assert!(!v.request(
            &SigningKey::from_bytes(&[4; 32]).verifying_key(),
            "hash-0",
            &ends[0]
        ));
        // A forged signature over a root never verified fails however good the proof.
        let forged = sign_batch(&SigningKey::from_bytes(&[4; 32]), &[request_message("x")])
            .remove(0)
            .end("x");
        let mut forged_with_key = forged.clone();
        forged_with_key.signature = ends[0].signature.clone();
        assert!(!v.request(&key, "x", &forged_with_key));
    }
}
