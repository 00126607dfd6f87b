//! The gateway's HTTP client for its two hops: to the information systems of the member it
//! serves (as the provider's gateway), and to other gateways over mutual TLS (as the
//! client's gateway).
//!
//! It is hyper's pooled client and nothing more. reqwest, used before, parses every URL
//! again, wraps every call in redirect and retry policies and a timer, and boxes its body
//! twice; on the provider's hop alone that cost about a tenth of the calls the two gateways
//! pass on these two cores (docs/BENCHMARKS.md). What reqwest gave that a gateway needs is
//! kept: a connect timeout, and a bound on how long any read waits, for the answer's head
//! or for any piece of its body, so a stalled peer cannot hold a call for ever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use crate::coalesce::ClientConn;

/// What a hop connects with: hyper-rustls's connector, its HTTP/2 connections' writes
/// coalesced (`coalesce`).
type Connector = tower::util::MapResponse<HttpsConnector<HttpConnector>, Coalesce>;
type Coalesce = fn(
    MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
) -> ClientConn<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>;

/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(5);

/// How much of one call's body a gateway may send to another before the receiver reads it
/// (HTTP/2's flow-control window of a stream): the size of the gateways' own buffer.
pub const WINDOW: u32 = crate::exchange_peer::BUFFER as u32;

/// The same for all the calls on one connection between two gateways together.
pub const CONNECTION_WINDOW: u32 = 4 * WINDOW;

// h2 counts the resets it makes itself, among them for frames that arrive on a stream
// already given up (a client that hung up, an answer refused half-way), over a connection's
// whole life, and past 1,024 drops the connection with every call on it, taking the peer
// for an attacker. Between gateways the peer is authenticated by the signed configuration,
// and a connection lives for days, so both sides set no such limit
// (`http2_max_local_error_reset_streams(None)` here, `max_local_error_reset_streams(None)`
// on the gateways' listener; the tests `a_peer_sending_on_streams_given_up_…` here and
// `a_caller_sending_on_streams_given_up_…` in `exchange_peer` fail without them).

/// How long a read may wait: for the answer's head, or for any piece of its body.
pub const READ: Duration = Duration::from_secs(60);

/// A pooled HTTP client for one kind of hop.
#[derive(Clone)]
pub struct Hop {
    client: Client<Connector, Body>,
    read: Duration,
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hop").field("read", &self.read).finish()
    }
}

impl Hop {
    /// Reaches information systems over plain HTTP, or over HTTPS with the web's public
    /// roots (those reqwest trusted before).
    pub fn to_information_systems() -> Hop {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Into::into(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| unreachable_config());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector())
            .map_response(ClientConn::new as Coalesce);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Hop { client, read: READ }
    }

    /// Reaches other gateways with `tls` only (mutual TLS pinned to the peer's certificate,
    /// see `civitas_exchange::tls::client_config`); plain HTTP is refused. HTTP/2 when the
    /// peer offers it: every call to that gateway then shares one connection, and the
    /// frames of calls under way together go out in one write and one TLS record, where
    /// HTTP/1.1 writes, encrypts and wakes the peer once per message.
    pub fn to_gateway(mut tls: rustls::ClientConfig) -> Hop {
        // hyper-rustls names the protocols itself, and refuses a configuration that does.
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(connector())
            .map_response(ClientConn::new as Coalesce);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_initial_stream_window_size(WINDOW)
            .http2_initial_connection_window_size(CONNECTION_WINDOW)
            .http2_max_local_error_reset_streams(None)
            .build(https);
        Hop { client, read: READ }
    }

    /// Sends `req` and gives the answer once its head is in; its body is read as it comes.
    /// An error says why in words (the causes included), naming no URL.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, String> {
        let answer = tokio::time::timeout(self.read, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {} s", self.read.as_secs()))?
            .map_err(|e| chain(&e))?;
        let read = self.read;
        Ok(answer.map(|body| Body::new(ReadTimeout::new(body, read))))
    }
}

/// TCP with Nagle's algorithm off (messages are written whole) and a connect timeout;
/// https URLs are the TLS layer's to check.
fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT));
    http
}

/// rustls's ring provider supports its safe default versions, so building the config does
/// not fail; were it ever to, the client trusts nothing rather than stopping the node.
fn unreachable_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// An error with its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A body whose every read may wait at most `wait`; past it, the body ends with an error.
struct ReadTimeout {
    inner: hyper::body::Incoming,
    wait: Duration,
    /// The deadline of the read in progress, if one is waiting.
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl ReadTimeout {
    fn new(inner: hyper::body::Incoming, wait: Duration) -> ReadTimeout {
        ReadTimeout {
            inner,
            wait,
            timer: Box::pin(tokio::time::sleep(wait)),
            armed: false,
        }
    }
}

impl http_body::Body for ReadTimeout {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.armed {
                    this.timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.wait);
                    this.armed = true;
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "no data for {} s; the answer was broken off",
                        this.wait.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hop that waits 200 ms for any read, and a call to `addr` for it to send.
    fn impatient_call(addr: std::net::SocketAddr) -> (Hop, Request<Body>) {
        let mut hop = Hop::to_information_systems();
        hop.read = Duration::from_millis(200);
        let req = Request::get(format!("http://{addr}/x"))
            .body(Body::empty())
            .unwrap();
        (hop, req)
    }

    /// A peer that sends its head and then nothing: the body's read ends with an error
    /// after the wait, instead of holding the call.
    #[tokio::test]
    async fn a_stalled_body_is_broken_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let (hop, req) = impatient_call(addr);
        let res = hop.send(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let err = axum::body::to_bytes(res.into_body(), 1024)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no data for"), "{err}");
    }

    /// A peer that never answers: the call gives up after the wait, saying so.
    #[tokio::test]
    async fn a_peer_that_never_answers_is_given_up_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let (hop, req) = impatient_call(addr);
        let err = hop.send(req).await.unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
    }

    /// The next HTTP/2 frame from `s`: its type, flags, stream and payload.
    pub(crate) async fn read_frame(
        s: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & !(1 << 31);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await?;
        Ok((head[3], head[4], stream, payload))
    }

    /// An HTTP/2 frame: its type, flags, stream and payload.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    }

    /// A peer gateway that keeps sending on streams the caller gave up, as a busy peer
    /// does when its last frames cross the caller's reset: h2 refuses each such frame
    /// with a reset of its own and, by default, drops the connection with every call on it
    /// after 1,024 of them. Between gateways it must not. The peer is HTTP/2 written
    /// frame by frame, so that it can send what a library would not: for each call, its
    /// head and a first piece; the rest once the caller's reset of it is older than the
    /// second for which h2 remembers a stream it reset (after that, or past 50 such
    /// streams at once, h2 has forgotten it and refuses the frame with a reset of its own).
    #[tokio::test]
    async fn a_peer_sending_on_streams_given_up_does_not_break_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let keys = civitas_exchange::keys::GatewayKeys::generate().unwrap();
        let server =
            civitas_exchange::tls::server_config(&keys, std::sync::Arc::new(|_: &[u8]| true))
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        let late = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sent = late.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let late_sent = sent.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut s = acceptor.accept(tcp).await.unwrap();
                    let mut preface = [0u8; 24];
                    s.read_exact(&mut preface).await.unwrap();
                    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
                    let mut open = std::collections::HashSet::new();
                    let mut given_up = std::collections::VecDeque::new();
                    loop {
                        let Ok((kind, flags, stream, _)) = read_frame(&mut s).await else {
                            return;
                        };
                        let mut out = Vec::new();
                        match (kind, flags) {
                            // SETTINGS, not an acknowledgement: acknowledge it.
                            (4, 0) => out.extend(frame(4, 1, 0, &[])),
                            // A call: its head (":status: 200", HPACK's static entry 8)
                            // and the first piece of its body.
                            (1, _) => {
                                out.extend(frame(1, 4, stream, &[0x88]));
                                out.extend(frame(0, 0, stream, b"first"));
                                open.insert(stream);
                            }
                            // RST_STREAM: the caller gave a call up.
                            (3, _) if open.remove(&stream) => {
                                given_up.push_back((stream, std::time::Instant::now()));
                            }
                            _ => {}
                        }
                        while let Some((stream, _)) = given_up
                            .front()
                            .filter(|(_, at)| at.elapsed() > Duration::from_millis(1_200))
                        {
                            out.extend(frame(0, 1, *stream, b"late"));
                            given_up.pop_front();
                            late_sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        if !out.is_empty() && s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let tls = civitas_exchange::tls::client_config(&keys, &keys.tls_certificate).unwrap();
        let hop = Hop::to_gateway(tls);
        // Calls until 1,100 late frames have been sent (h2's limit is 1,024), and one more.
        let mut enough = false;
        for n in 0.. {
            assert!(n < 100_000, "the peer sent too few late frames");
            let req = Request::get(format!("https://{addr}/{n}"))
                .body(Body::empty())
                .unwrap();
            let res = hop
                .send(req)
                .await
                .unwrap_or_else(|e| panic!("call {n}: {e}"));
            let mut body = res.into_body().into_data_stream();
            let first = futures_util::StreamExt::next(&mut body).await;
            assert_eq!(first.unwrap().unwrap(), "first", "call {n}");
            // Given up here: the stream is reset.
            if enough {
                break;
            }
            enough = late.load(std::sync::atomic::Ordering::SeqCst) >= 1_100;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A gateway is reached over TLS only.
    #[tokio::test]
    async fn a_gateway_is_not_reached_in_clear() {
        let mut tls = unreachable_config();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let hop = Hop::to_gateway(tls);
        let req = Request::post("http://127.0.0.1:9/exchange/v1/message")
            .body(Body::empty())
            .unwrap();
        let err = hop.send(req).await.unwrap_err();
        assert!(err.contains("unsupported scheme http"), "{err}");
    }
}
