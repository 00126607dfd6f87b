//! Calls between gateways: the client's gateway forwards a checked call to the provider's
//! gateway over mutual TLS 1.3, as signed frames (`civitas_exchange::message`), and checks
//! the signed answer and its request hash; the provider's gateway checks the caller's
//! certificate and signature, checks the call again against its own configuration, takes
//! it to the provider and signs the answer. Both log the call.
//!
//! A body up to [`BUFFER`] is held until its signature verifies, so nothing unverified
//! reaches the provider or the client; a larger one streams through (chunked: the length the
//! provider is told is never the sender's word) and is broken off, before its last chunk,
//! if the signature at its end does not verify.
//!
//! A message whose body is known to fit in [`BUFFER`] (almost every call) is read whole,
//! signed, and sent as one piece with its length: one write and one TLS record instead of a
//! chunk per frame. Gateways speak HTTP/2 to each other when both offer it (ALPN), so the
//! messages of calls under way together share those writes and records too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use civitas_core::xroad::MemberId;
use civitas_exchange::directory::GatewayEntry;
use civitas_exchange::directory::Snapshot;
use civitas_exchange::keys::GatewayKeys;
use civitas_exchange::message::{
    self, DATA, Decoder, END, End, HEAD, RequestHead, ResponseDigest, ResponseHead, Signer,
    Verified,
};
use civitas_exchange::protocol::{Fault, RequestHash, passes_on_response};
use futures_util::{StreamExt, stream};

use crate::Shared;
use crate::exchange::{
    BodyStream, Peer, Prepared, Side, configuration_in_force, deliver, fault, finish, finishing,
    internal, last, prepare, unavailable,
};
use crate::hop::Hop;

/// The most of a body held back until its signature verifies.
pub const BUFFER: usize = 1 << 20;

/// How this gateway reaches another: pinned to its certificate, at its message URL.
struct PeerClient {
    certificate: Vec<u8>,
    /// The gateway's address as the configuration gives it.
    address: String,
    client: Hop,
    url: Uri,
}

/// This node as a gateway of one member.
pub struct GatewayRole {
    /// The member whose information systems it serves.
    pub member: MemberId,
    /// Its keys.
    pub keys: GatewayKeys,
    /// Signs its messages, in batches when it is busy.
    signer: Signer,
    /// The other gateways' batch signatures it has verified.
    verified: Arc<Verified>,
    /// A client per provider gateway, pinned to that gateway's certificate, and the URL
    /// messages go to.
    clients: Mutex<HashMap<civitas_core::xroad::MemberId, PeerClient>>,
}

impl GatewayRole {
    /// The gateway of `member` with `keys` (its signer runs on the current Tokio runtime).
    pub fn new(member: MemberId, keys: GatewayKeys) -> GatewayRole {
        GatewayRole {
            member,
            signer: Signer::start(keys.signing.clone()),
            keys,
            verified: Arc::default(),
            clients: Mutex::default(),
        }
    }

    /// An HTTP client that reaches `peer` only: mutual TLS 1.3 with this gateway's
    /// certificate, accepting only the certificate the configuration gives for `peer`. A
    /// new certificate makes a new client, so connections to a replaced key are dropped.
    fn client_for(&self, peer: &GatewayEntry) -> Result<(Hop, Uri), Fault> {
        let cert = &peer.certificate;
        let mut clients = self.clients.lock().map_err(internal)?;
        let key = &peer.gateway.member;
        if let Some(p) = clients.get(key)
            && p.certificate == *cert
            && p.address == peer.gateway.address
        {
            return Ok((p.client.clone(), p.url.clone()));
        }
        let url: Uri = format!("{}{}", peer.gateway.address, message::PATH)
            .parse()
            .map_err(internal)?;
        let tls = civitas_exchange::tls::client_config(&self.keys, cert).map_err(internal)?;
        let client = Hop::to_gateway(tls);
        clients.insert(
            key.clone(),
            PeerClient {
                certificate: cert.clone(),
                address: peer.gateway.address.clone(),
                client: client.clone(),
                url: url.clone(),
            },
        );
        Ok((client, url))
    }
}

/// The certificate the calling gateway presented on this connection.
#[derive(Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Reads frames from a body.
struct FrameReader {
    stream: BodyStream,
    decoder: Decoder,
}

impl FrameReader {
    fn new(stream: BodyStream) -> FrameReader {
        FrameReader {
            stream,
            decoder: Decoder::default(),
        }
    }

    /// The next frame; `None` at a clean end.
    async fn next(&mut self) -> Result<Option<(u8, Bytes)>, String> {
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                return Ok(Some(f));
            }
            match self.stream.next().await {
                Some(Ok(bytes)) => self.decoder.push(&bytes),
                Some(Err(e)) => return Err(e.to_string()),
                None if self.decoder.is_empty() => return Ok(None),
                None => return Err("the message was cut off inside a frame".into()),
            }
        }
    }

    /// Whether the message ends here, as it must after its end frame. Reading to the very
    /// end matters beyond the check: an HTTP/2 stream given up before its end is reset, what
    /// the peer still sends on it is refused with resets of h2's own, and h2 counts those
    /// over the connection's life (see the note on it in `hop`).
    async fn at_end(&mut self) -> bool {
        matches!(self.next().await, Ok(None))
    }
}

fn strings(headers: &[(HeaderName, HeaderValue)]) -> Result<Vec<(String, String)>, Fault> {
    headers
        .iter()
        .map(|(n, v)| {
            let v = v.to_str().map_err(|_| {
                Fault::client(
                    "BadRequest",
                    format!("the header {n} is not text; it cannot pass between gateways"),
                )
            })?;
            Ok((n.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The largest data frame sent: larger pieces go as several (views of the same bytes), so
/// the receiving gateway's buffers stay small whatever pieces the sender's peer wrote.
const MAX_DATA_FRAME: usize = 64 * 1024;

/// A piece of a body as data frames: each frame's header, then its part of the piece,
/// uncopied.
fn data_frame(b: Bytes) -> Vec<Result<Bytes, std::io::Error>> {
    let mut out = Vec::with_capacity(2 * b.len().div_ceil(MAX_DATA_FRAME).max(1));
    let mut at = 0;
    loop {
        let end = (at + MAX_DATA_FRAME).min(b.len());
        let part = b.slice(at..end);
        out.push(Ok(Bytes::copy_from_slice(&message::frame_header(
            DATA,
            part.len(),
        ))));
        out.push(Ok(part));
        at = end;
        if at >= b.len() {
            return out;
        }
    }
}

/// A message as frames: the head, the body as it streams (each piece given to `on_data` on
/// the way), and the end frame `end` makes once the body is through (it is not polled
/// before).
fn frames(
    head: Vec<u8>,
    body: BodyStream,
    mut on_data: impl FnMut(&[u8]) + Send + 'static,
    end: impl Future<Output = std::io::Result<Vec<u8>>> + Send + 'static,
) -> BodyStream {
    let head = stream::once(async move { Ok(Bytes::from(message::frame(HEAD, &head))) });
    let data = body.flat_map(move |chunk| {
        stream::iter(match chunk {
            Ok(b) => {
                on_data(&b);
                data_frame(b)
            }
            Err(e) => vec![Err(e)],
        })
    });
    let end = stream::once(async move { end.await.map(Bytes::from) });
    head.chain(data).chain(end).boxed()
}

/// A message's head and its whole body as one data frame (none if empty), in one piece;
/// `room` more bytes are reserved for what follows.
fn head_and_body(head: &[u8], body: &[u8], room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + body.len() + 10 + room);
    out.extend_from_slice(&message::frame_header(HEAD, head.len()));
    out.extend_from_slice(head);
    if !body.is_empty() {
        out.extend_from_slice(&message::frame_header(DATA, body.len()));
        out.extend_from_slice(body);
    }
    out
}

/// A whole message as one piece: its head, its body and its end.
fn whole_message(head: &[u8], body: &[u8], end: &End) -> Bytes {
    let end = message::json_frame(END, end);
    let mut out = head_and_body(head, body, end.len());
    out.extend_from_slice(&end);
    Bytes::from(out)
}

/// A body read as far as [`BUFFER`]: all of it, or the part read and the rest.
enum Read {
    Whole(Bytes),
    Partly(Vec<Bytes>, BodyStream),
}

async fn read_up_to_buffer(mut body: BodyStream) -> std::io::Result<Read> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        size += piece.len();
        parts.push(piece);
        if size > BUFFER {
            return Ok(Read::Partly(parts, body));
        }
    }
    Ok(Read::Whole(match parts.len() {
        0 => Bytes::new(),
        1 => parts.remove(0),
        _ => Bytes::from(parts.concat()),
    }))
}

/// The frames of a request: the head, the body as it streams (hashed on the way), and the
/// signature over the request hash, which is also sent to `signed`.
fn request_frames(
    head: Vec<u8>,
    body: BodyStream,
    hash: Arc<Mutex<RequestHash>>,
    signer: Signer,
    signed: tokio::sync::oneshot::Sender<String>,
) -> BodyStream {
    let fed = hash.clone();
    frames(
        head,
        body,
        move |b| {
            if let Ok(mut h) = fed.lock() {
                h.body(b);
            }
        },
        async move {
            let h = hash
                .lock()
                .map_err(|_| std::io::Error::other("hash"))?
                .finish();
            let end = message::json_frame(END, &signer.sign_request(&h).await);
            let _ = signed.send(h);
            Ok(end)
        },
    )
}

/// What is left of a framed body after the buffered part: data frames as they come, and
/// at the end the check `verified`; a failed check or a broken stream ends the body with an
/// error, which breaks the connection it is streaming into.
fn rest_of_body<F, V>(reader: FrameReader, on_data: F, verified: V) -> BodyStream
where
    F: FnMut(&[u8]) + Send + 'static,
    V: FnOnce(End) -> bool + Send + 'static,
{
    struct Reading<F, V> {
        reader: FrameReader,
        on_data: F,
        verified: Option<V>,
        done: bool,
    }
    let start = Reading {
        reader,
        on_data,
        verified: Some(verified),
        done: false,
    };
    stream::unfold(start, |mut st| async move {
        if st.done {
            return None;
        }
        let failure = match st.reader.next().await {
            Ok(Some((DATA, b))) => {
                (st.on_data)(&b);
                return Some((Ok(b), st));
            }
            Ok(Some((END, b))) => {
                let end = serde_json::from_slice::<End>(&b).ok();
                let ok = match (end, st.verified.take()) {
                    (Some(end), Some(check)) => check(end),
                    _ => false,
                };
                if !ok {
                    "the message's signature does not verify; the body was broken off".to_string()
                } else if st.reader.at_end().await {
                    return None;
                } else {
                    "frames after the end of the message".to_string()
                }
            }
            Ok(Some(_)) => "an unexpected frame in the message".to_string(),
            Ok(None) => "the message ended without its signature".to_string(),
            Err(e) => e,
        };
        tracing::warn!(reason = %failure, "a streamed exchange body was broken off");
        st.done = true;
        Some((Err(std::io::Error::other(failure)), st))
    })
    .boxed()
}

/// Takes a checked call to the provider's gateway and checks its answer (client's side).
pub(crate) async fn forward(
    app: &Shared,
    role: &GatewayRole,
    directory: &Snapshot,
    mut p: Prepared,
    has_body: bool,
    length: Option<HeaderValue>,
    body: BodyStream,
) -> Result<Response, Fault> {
    let member = &p.service_id.provider.member;
    let peer = directory.gateway_of(member).cloned().ok_or_else(|| {
        Fault::client_proxy(
            "SslAuthenticationFailed",
            format!("no gateway of {member} holds keys in force (revoked, or never registered)"),
        )
    })?;
    let peer_key = peer.key;
    let (client, url) = role.client_for(&peer)?;
    let head = RequestHead {
        method: p.method.as_str().to_string(),
        target: p.target.clone(),
        headers: strings(&p.forward)?,
        has_body,
        content_length: length
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    };
    let hash = Arc::new(Mutex::new(std::mem::replace(
        &mut p.hash,
        RequestHash::new("", "", []),
    )));
    let head_bytes = serde_json::to_vec(&head).map_err(internal)?;
    // A body the client said fits in the buffer is read whole and the message goes in one
    // piece; any other streams through.
    let read = if !has_body {
        Read::Whole(Bytes::new())
    } else if head.content_length.is_some_and(|n| n <= BUFFER as u64) {
        read_up_to_buffer(body).await.map_err(|e| {
            Fault::client("BadRequest", format!("the request's body broke off: {e}"))
        })?
    } else {
        Read::Partly(Vec::new(), body)
    };
    // A request that streams is signed when its body ends, which may be after the answer
    // has come: its hash for this side's log is the one signed.
    let mut signed = None;
    let outgoing = match read {
        Read::Whole(body) => {
            let request_hash = {
                let mut h = hash.lock().map_err(internal)?;
                h.body(&body);
                h.finish()
            };
            let end = role.signer.sign_request(&request_hash).await;
            Body::from(whole_message(&head_bytes, &body, &end))
        }
        Read::Partly(read, rest) => {
            let (sent, signing) = tokio::sync::oneshot::channel();
            signed = Some(signing);
            Body::from_stream(request_frames(
                head_bytes,
                stream::iter(read.into_iter().map(Ok)).chain(rest).boxed(),
                hash.clone(),
                role.signer.clone(),
                sent,
            ))
        }
    };
    let unreachable = |e: String| {
        Fault::client_proxy(
            "NetworkError",
            format!("the gateway of {member} cannot be reached: {e}"),
        )
    };
    let request = axum::http::Request::post(url)
        .header(header::CONTENT_TYPE, message::CONTENT_TYPE)
        .body(outgoing)
        .map_err(|e| unreachable(e.to_string()))?;
    let answer = client.send(request).await.map_err(unreachable)?;
    let invalid = |m: &str| Fault::client_proxy("InvalidResponse", m.to_string());
    if answer.status() != StatusCode::OK
        || answer
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|v| v.as_bytes() != message::CONTENT_TYPE.as_bytes())
    {
        return Err(invalid(
            "the provider's gateway did not answer with a signed message",
        ));
    }
    let mut reader = FrameReader::new(
        answer
            .into_body()
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other))
            .boxed(),
    );
    let head_bytes = match reader.next().await {
        Ok(Some((HEAD, b))) => b,
        _ => return Err(invalid("the provider's gateway's answer has no head")),
    };
    let response_head: ResponseHead = serde_json::from_slice(&head_bytes)
        .map_err(|_| invalid("the provider's gateway's answer has an unreadable head"))?;
    let is_fault = response_head
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-road-error"));
    let digest = Arc::new(Mutex::new(ResponseDigest::new(&head_bytes)));
    let mut buffered: Vec<Bytes> = Vec::new();
    let mut size = 0;
    // An answer whose head gives its length is whole once that much has come; its end frame
    // follows when the provider's gateway has logged the call.
    let declared = response_head.length.filter(|n| *n <= BUFFER as u64);
    let end = loop {
        if declared == Some(size as u64) {
            break Answer::Whole;
        }
        match reader.next().await {
            Ok(Some((DATA, b))) => {
                digest.lock().map_err(internal)?.body(&b);
                size += b.len();
                buffered.push(b);
                if size > BUFFER {
                    break Answer::Streaming;
                }
            }
            Ok(Some((END, b))) => {
                let end = read_end(&b)?;
                if !reader.at_end().await {
                    return Err(invalid("frames after the end of the answer"));
                }
                break Answer::Ended(end);
            }
            _ => return Err(invalid("the provider's gateway broke off its answer")),
        }
    };
    // The answer is the provider gateway's, for this very request (its request hash is
    // ours); a fault it raised before reading the request is signed without one.
    let check = {
        let digest = digest.clone();
        let hash = hash.clone();
        let verified = role.verified.clone();
        move |end: End| {
            let own = hash.lock().map(|h| h.finish()).unwrap_or_default();
            let d = digest.lock().map(|d| d.finish()).unwrap_or_default();
            verified.response(&peer_key, &own, &d, &end)
                || (is_fault
                    && end.request_hash.is_empty()
                    && verified.response(&peer_key, "", &d, &end))
        }
    };
    let unverified = || {
        Fault::client_proxy(
            "InvalidSignatureValue",
            "the provider's gateway's answer does not verify: its signature or its request hash does not match",
        )
    };
    let mut pending = None;
    let body = match end {
        Answer::Ended(end) => {
            if !check(end) {
                return Err(unverified());
            }
            Body::from(buffered.concat())
        }
        Answer::Whole => {
            pending = Some((reader, check));
            Body::from(buffered.concat())
        }
        Answer::Streaming => {
            let fed = digest.clone();
            let rest = rest_of_body(
                reader,
                move |b| {
                    if let Ok(mut d) = fed.lock() {
                        d.body(b);
                    }
                },
                check,
            );
            Body::from_stream(stream::iter(buffered.into_iter().map(Ok)).chain(rest))
        }
    };
    let mut res = Response::builder().status(response_head.status);
    for (n, v) in &response_head.headers {
        if passes_on_response(n) || (is_fault && n.eq_ignore_ascii_case("x-road-error")) {
            res = res.header(n, v);
        }
    }
    let res = res.body(body).map_err(internal)?;
    // An answer comes once the provider's gateway has read the whole request, so by then
    // this side has signed it; a fault may come before (refused unread), and is logged with
    // what was sent.
    let signed = match signed {
        Some(signed) if !is_fault => tokio::time::timeout(END_DUE, signed)
            .await
            .ok()
            .and_then(Result::ok),
        _ => None,
    };
    let (request_hash, body_bytes) = {
        let h = hash.lock().map_err(internal)?;
        (signed.unwrap_or_else(|| h.finish()), h.body_bytes())
    };
    let peer = Peer {
        side: Side::Client,
        gateway: peer.gateway.member.to_string(),
        request_id: None,
    };
    let call = p.logged(Vec::new(), Some(peer));
    let Some((mut reader, check)) = pending else {
        return finish(app, res, call, request_hash, body_bytes).await;
    };
    // The whole answer is here: log this side while its signature is on its way, and
    // release the answer only when both are done and it verifies.
    let (res, log) = crate::exchange::finishing(app, res, call, request_hash, body_bytes)?;
    let ending = async {
        // However slowly its bytes come, the signature is due within the read timeout.
        let end = tokio::time::timeout(END_DUE, async {
            match reader.next().await {
                Ok(Some((END, b))) if reader.at_end().await => Some(b),
                _ => None,
            }
        });
        match end.await {
            Ok(Some(b)) => read_end(&b),
            _ => Err(invalid(
                "the provider's gateway broke off its answer before signing it",
            )),
        }
    };
    let (logged, ended) = tokio::join!(log, ending);
    let verified = ended.map(check);
    logged?;
    match verified {
        Ok(true) => Ok(res),
        refused => {
            // This side logged the answer as it came; the log also says it was refused.
            let event = civitas_ledger::Event::new(
                "exchange.answer_refused",
                &format!("xroad:{}", p.client),
                &format!("exchange/service/{}", p.service_id),
            )
            .with("request_id", p.request_id.clone())
            .with(
                "reason",
                if refused.is_ok() {
                    "InvalidSignatureValue"
                } else {
                    "InvalidResponse"
                },
            );
            if let Err(e) = app.ledger.append(&event).await {
                tracing::error!(error = %e, "cannot log a refused answer");
            }
            Err(refused.err().unwrap_or_else(unverified))
        }
    }
}

/// How long the client's gateway waits for the signature of an answer whose body has come.
const END_DUE: std::time::Duration = std::time::Duration::from_secs(60);

/// What of an answer has come once its buffered part is read.
enum Answer {
    /// The whole answer and its end frame.
    Ended(End),
    /// The whole body, as long as its head said; the end frame is still to come.
    Whole,
    /// More than the buffer holds: the rest streams.
    Streaming,
}

fn read_end(payload: &[u8]) -> Result<End, Fault> {
    serde_json::from_slice(payload)
        .map_err(|_| Fault::client_proxy("InvalidResponse", "the answer's end is unreadable"))
}

/// `POST /exchange/v1/message` on the gateways' TLS listener: a call from another gateway.
pub(crate) async fn receive(
    State(app): State<Shared>,
    Extension(cert): Extension<PeerCertificate>,
    req: Request,
) -> Response {
    let Some(role) = app.gateway_role.clone() else {
        return fault(Fault::server_proxy(
            "InvalidRequest",
            "this node is not a gateway",
        ));
    };
    let stream = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .boxed();
    match receive_call(&app, &role, &cert.0, FrameReader::new(stream)).await {
        Ok(res) => res,
        Err(f) => framed(&role, fault(f), None, None).await,
    }
}

async fn receive_call(
    app: &Shared,
    role: &GatewayRole,
    cert: &[u8],
    mut reader: FrameReader,
) -> Result<Response, Fault> {
    configuration_in_force(app, Side::Provider)?;
    let directory = app.exchange.snapshot().await.map_err(unavailable)?;
    let sender = directory
        .gateway_with_certificate(cert)
        .cloned()
        .ok_or_else(|| {
            Fault::server_proxy(
                "SslAuthenticationFailed",
                "the calling gateway's certificate is not in force",
            )
        })?;
    let sender_key = sender.key;
    let sender_member = &sender.gateway.member;
    let invalid = |m: String| Fault::server_proxy("InvalidMessage", m);
    let head_bytes = match reader.next().await {
        Ok(Some((HEAD, b))) => b,
        _ => return Err(invalid("the message has no head".into())),
    };
    let head: RequestHead = serde_json::from_slice(&head_bytes)
        .map_err(|e| invalid(format!("the message's head is unreadable: {e}")))?;
    let method = axum::http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| invalid("the message's method is invalid".into()))?;
    let uri: axum::http::Uri = head
        .target
        .parse()
        .map_err(|_| invalid("the message's path is invalid".into()))?;
    let mut headers = HeaderMap::new();
    let mut forward = Vec::new();
    for (n, v) in &head.headers {
        let name = HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| invalid(format!("the header name {n:?} is invalid")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| invalid(format!("the header {n} has an invalid value")))?;
        headers.append(name.clone(), value.clone());
        forward.push((name, value));
    }
    // The provider receives the headers exactly as the calling gateway signed them (its
    // X-Road-Request-Id among them); this gateway keys its own records by its own id.
    let mut p = prepare(app, &directory, &method, &uri, &headers, Some(forward)).await?;
    if p.client.member != *sender_member {
        return Err(Fault::server_proxy(
            "AccessDenied",
            format!(
                "the gateway of {} may not call for {}",
                sender_member, p.client
            ),
        ));
    }
    if p.service_id.provider.member != role.member || p.service.is_none() {
        return Err(Fault::server_proxy(
            "UnknownService",
            format!("this gateway does not provide {}", p.service_id),
        ));
    }
    let mut hash = std::mem::replace(&mut p.hash, RequestHash::new("", "", []));
    let mut buffered: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    let complete = loop {
        match reader.next().await {
            Ok(Some((DATA, b))) => {
                hash.body(&b);
                size += b.len();
                buffered.push(b);
                if size > BUFFER {
                    break false;
                }
            }
            Ok(Some((END, b))) => {
                let end: End = serde_json::from_slice(&b)
                    .map_err(|_| invalid("the message's end is unreadable".into()))?;
                if !role.verified.request(&sender_key, &hash.finish(), &end) {
                    return Err(Fault::server_proxy(
                        "InvalidSignatureValue",
                        format!(
                            "the message does not verify against the key of {}'s gateway: it was changed on the way or signed by another key",
                            sender_member
                        ),
                    ));
                }
                if !reader.at_end().await {
                    return Err(invalid("frames after the end of the message".into()));
                }
                break true;
            }
            Ok(Some(_)) => return Err(invalid("an unexpected frame in the message".into())),
            Ok(None) => return Err(invalid("the message ended without its signature".into())),
            Err(e) => return Err(invalid(e)),
        }
    };
    let hash = Arc::new(Mutex::new(hash));
    let head_part: BodyStream = stream::iter(buffered.into_iter().map(Ok)).boxed();
    let body = if complete {
        head_part
    } else {
        let fed = hash.clone();
        let own = hash.clone();
        let verified = role.verified.clone();
        let rest = rest_of_body(
            reader,
            move |b| {
                if let Ok(mut h) = fed.lock() {
                    h.body(b);
                }
            },
            move |end| {
                let h = own.lock().map(|h| h.finish()).unwrap_or_default();
                verified.request(&sender_key, &h, &end)
            },
        );
        head_part.chain(rest).boxed()
    };
    let body = crate::exchange::capturing(body, p.capture.as_ref());
    // The length the provider is told is the length verified; a body still streaming goes
    // chunked (the sender's declared length is not signed, so it decides nothing).
    let length = complete.then(|| HeaderValue::from(size));
    let (res, others) = deliver(app, &p, head.has_body, length, body, None, false).await?;
    let (request_hash, body_bytes) = {
        let h = hash.lock().map_err(internal)?;
        (h.finish(), h.body_bytes())
    };
    let peer = Peer {
        side: Side::Provider,
        gateway: sender_member.to_string(),
        request_id: last(&headers, "x-road-request-id").map(crate::exchange::loggable_id),
    };
    // The answer goes on its way while the call is logged; its signature, which alone
    // makes it an answer the calling gateway accepts, waits for the log to be durable. So
    // the calling gateway can log its side at the same time.
    let (res, log) = finishing(
        app,
        res,
        p.logged(others, Some(peer)),
        request_hash,
        body_bytes,
    )?;
    Ok(framed(role, res, Some(hash), Some(Box::pin(log))).await)
}

/// The logging of a call, which an answer's signature waits for.
type Log = std::pin::Pin<Box<dyn Future<Output = Result<(), Fault>> + Send>>;

/// An answer as signed frames: its head, its body, and the signature over the request hash
/// (when the request was read) and the answer's digest. A body whose length says it fits
/// in [`BUFFER`] is read whole and its length put in the head, so the calling gateway knows
/// when it has all of it. The signature waits for `log`, if given; should the log fail,
/// the answer is broken off unsigned.
async fn framed(
    role: &GatewayRole,
    res: Response,
    hash: Option<Arc<Mutex<RequestHash>>>,
    log: Option<Log>,
) -> Response {
    let (parts, body) = res.into_parts();
    let small = axum::body::HttpBody::size_hint(&body)
        .exact()
        .is_some_and(|n| n <= BUFFER as u64)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n <= BUFFER as u64);
    // The log runs on its own, so it is written whatever becomes of this answer (a caller
    // that goes away after the body still leaves the call logged). A body that streams waits
    // for it before its first byte, as the answer of a call that cannot be logged is not
    // given.
    let log = match log {
        Some(log) if small => Some(tokio::spawn(log)),
        Some(log) => {
            if let Err(f) = log.await {
                return Box::pin(framed(role, fault(f), None, None)).await;
            }
            None
        }
        None => None,
    };
    let (whole, body) = if small {
        match axum::body::to_bytes(body, BUFFER).await {
            Ok(bytes) => (Some(bytes), None),
            Err(e) => {
                tracing::warn!(error = %e, "a provider's answer broke off");
                let f = fault(Fault::server_proxy(
                    "NetworkError",
                    "the provider's information system broke off its answer",
                ));
                if let Some(log) = log {
                    // The call is logged all the same: it reached the provider.
                    let _ = log.await;
                }
                return Box::pin(framed(role, f, None, None)).await;
            }
        }
    } else {
        (None, Some(body))
    };
    let head = ResponseHead {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        length: whole.as_ref().map(|b| b.len() as u64),
    };
    let head_bytes = serde_json::to_vec(&head).unwrap_or_default();
    let mut digest = ResponseDigest::new(&head_bytes);
    let request_hash = move || match &hash {
        Some(h) => h.lock().map(|h| h.finish()).unwrap_or_default(),
        None => String::new(),
    };
    let logged = async move {
        match log {
            Some(log) => match log.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(f)) => Err(std::io::Error::other(format!(
                    "the call could not be logged: {}",
                    f.message
                ))),
                Err(e) => Err(std::io::Error::other(format!(
                    "the call could not be logged: {e}"
                ))),
            },
            None => Ok(()),
        }
    };
    let body = match whole {
        Some(bytes) => {
            digest.body(&bytes);
            let signer = role.signer.clone();
            let end = async move {
                logged.await?;
                let end = signer
                    .sign_response(&request_hash(), &digest.finish())
                    .await;
                Ok(Bytes::from(message::json_frame(END, &end)))
            };
            let first = head_and_body(&head_bytes, &bytes, 0);
            let stream: BodyStream = stream::once(async move { Ok(Bytes::from(first)) })
                .chain(stream::once(end))
                .boxed();
            return message_response(Body::from_stream(stream));
        }
        None => body
            .unwrap_or_default()
            .into_data_stream()
            .map(|c| c.map_err(std::io::Error::other))
            .boxed(),
    };
    let digest = Arc::new(Mutex::new(digest));
    let fed = digest.clone();
    let signer = role.signer.clone();
    let stream = frames(
        head_bytes,
        body,
        move |b| {
            if let Ok(mut d) = fed.lock() {
                d.body(b);
            }
        },
        async move {
            logged.await?;
            let d = digest
                .lock()
                .map(|d| d.finish())
                .map_err(|_| std::io::Error::other("digest"))?;
            Ok(message::json_frame(
                END,
                &signer.sign_response(&request_hash(), &d).await,
            ))
        },
    );
    message_response(Body::from_stream(stream))
}

fn message_response(body: Body) -> Response {
    let mut res = Response::new(body);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(message::CONTENT_TYPE),
    );
    res
}

/// The gateways' polls as the directory saw them: when each last fetched the configuration
/// and which version it held then.
#[derive(Debug, Clone, Default)]
pub struct Polls(Arc<Mutex<HashMap<String, (i64, u64)>>>);

impl Polls {
    /// Each gateway's last poll (ms since the epoch) and the version it held.
    pub fn all(&self) -> Vec<(String, i64, u64)> {
        let mut out: Vec<(String, i64, u64)> = self
            .0
            .lock()
            .map(|m| m.iter().map(|(k, (t, v))| (k.clone(), *t, *v)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Notes a gateway's poll when its claim verifies against its registered key and is recent;
/// whether it did.
pub(crate) async fn note_poll(app: &Shared, claim: &str) -> bool {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let Ok(directory) = app.exchange.snapshot().await else {
        return false;
    };
    let read = civitas_exchange::configuration::read_poll_claim(claim, now, |m| {
        directory.gateway_of(m).map(|g| g.key)
    });
    let Some((member, _, version)) = read else {
        return false;
    };
    if let Ok(mut polls) = app.gateway_polls.0.lock() {
        polls.insert(member.to_string(), (now, version));
    }
    true
}

/// Serves the gateways' TLS listener until `stop` resolves: mutual TLS 1.3, each
/// connection's client certificate handed to the handler.
pub async fn serve_peers(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(stop);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the gateways' listener cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        // Messages are written whole; Nagle's algorithm would hold a TLS record's tail
        // back for the peer's delayed acknowledgement.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "a gateway's TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            let service = router.layer(Extension(PeerCertificate(Arc::new(cert))));
            let service = hyper_util::service::TowerToHyperService::new(service);
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let served = if h2 {
                let io = hyper_util::rt::TokioIo::new(crate::coalesce::Coalescing::new(tls));
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .initial_stream_window_size(crate::hop::WINDOW)
                    .initial_connection_window_size(crate::hop::CONNECTION_WINDOW)
                    .max_local_error_reset_streams(None)
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "a gateway connection ended with an error");
            }
        });
    }
}

/// Whether `der` is the certificate of a gateway in force (for the TLS handshake).
pub fn admits(directory: civitas_exchange::Directory) -> civitas_exchange::tls::Admits {
    Arc::new(move |der: &[u8]| {
        directory
            .installed()
            .is_some_and(|s| s.gateway_with_certificate(der).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateways' listener serving `router` on a loopback port, with a gateway's keys;
    /// its address and the TLS configuration of a caller with the same keys.
    async fn listening(router: axum::Router) -> (std::net::SocketAddr, rustls::ClientConfig) {
        let keys = GatewayKeys::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = civitas_exchange::tls::server_config(&keys, Arc::new(|_: &[u8]| true)).unwrap();
        tokio::spawn(serve_peers(
            listener,
            router,
            Arc::new(tls),
            std::future::pending(),
        ));
        let client = civitas_exchange::tls::client_config(&keys, &keys.tls_certificate).unwrap();
        (addr, client)
    }

    /// Gateways speak HTTP/2 to each other (one connection carries every call at once), and
    /// a peer that offers HTTP/1.1 only is answered in HTTP/1.1.
    #[tokio::test]
    async fn gateways_speak_http2_to_each_other_and_http11_to_a_peer_that_asks_for_it() {
        // It answers any call with the HTTP version the call came in.
        let router = axum::Router::new()
            .fallback(|req: axum::extract::Request| async move { format!("{:?}", req.version()) });
        let (addr, client) = listening(router).await;
        let url = format!("https://{addr}{}", message::PATH);

        let hop = Hop::to_gateway(client.clone());
        let req = axum::http::Request::post(&url).body(Body::empty()).unwrap();
        let res = hop.send(req).await.unwrap();
        let text = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
        assert_eq!(&text[..], b"HTTP/2.0");

        let mut only_11 = client;
        only_11.alpn_protocols = vec![b"http/1.1".to_vec()];
        let old = reqwest::Client::builder()
            .use_preconfigured_tls(only_11)
            .build()
            .unwrap();
        let text = old.post(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(text, "HTTP/1.1");
    }

    /// The listener's side of `hop::tests::a_peer_sending_on_streams_given_up_does_not_break_the_connection`:
    /// a calling gateway keeps sending a request's body after the listener answered and gave
    /// the rest of the body up, as a busy caller does when its last frames cross the
    /// listener's reset. The caller is HTTP/2 written frame by frame: each call is a head
    /// and a first piece of body; the rest goes once the listener's reset of the call is
    /// older than the second h2 remembers it. h2 refuses each such frame with a reset of its
    /// own and, by default, drops the connection after 1,024; between gateways it must not.
    #[tokio::test]
    async fn a_caller_sending_on_streams_given_up_does_not_break_the_connection() {
        use crate::hop::tests::{frame, read_frame};
        use tokio::io::AsyncWriteExt;
        // It answers at once, reading nothing of the body.
        let router = axum::Router::new().fallback(|| async { "answered" });
        let (addr, client) = listening(router).await;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let mut s = connector.connect(name, tcp).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(4, 0, 0, &[]));
        s.write_all(&out).await.unwrap();
        let mut given_up = std::collections::VecDeque::new();
        let mut late = 0;
        let mut stream = 1u32;
        // Calls until 1,100 late frames have been sent (h2's limit is 1,024), and one more.
        loop {
            assert!(stream < 200_000, "too few late frames were sent");
            let enough = late >= 1_100;
            // GET / over https (HPACK's static entries 2, 7 and 4), body to follow.
            let mut out = frame(1, 4, stream, &[0x82, 0x87, 0x84]);
            out.extend(frame(0, 0, stream, b"first"));
            while let Some((old, _)) =
                given_up
                    .front()
                    .filter(|(_, at): &&(u32, std::time::Instant)| {
                        at.elapsed() > std::time::Duration::from_millis(1_200)
                    })
            {
                out.extend(frame(0, 1, *old, b"late"));
                given_up.pop_front();
                late += 1;
            }
            s.write_all(&out).await.unwrap();
            // Reads until the listener has answered this call and given up its body.
            let (mut answered, mut reset) = (false, false);
            while !(answered && reset) {
                let (kind, flags, id, payload) = read_frame(&mut s).await.unwrap();
                match (kind, flags) {
                    (4, 0) => s.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
                    (7, _) => panic!(
                        "call {stream}: the listener dropped the connection: {}",
                        String::from_utf8_lossy(payload.get(8..).unwrap_or_default())
                    ),
                    (1, _) if id == stream => answered = true,
                    (3, _) if id == stream => reset = true,
                    _ => {}
                }
            }
            given_up.push_back((stream, std::time::Instant::now()));
            stream += 2;
            if enough {
                break;
            }
        }
    }
}
