//! A raw HTTP/1.1 client (hyper) over TCP or a unix socket, a WebSocket client, and the echo
//! upstream that reports the headers it received.
//!
//! The request target is sent byte for byte: `/api/v1/public/../admin` and `%2e%2e` must
//! reach the gateway unresolved, which URL-based clients do not allow.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_tungstenite::tungstenite;

/// Where to send a request.
#[derive(Clone, Debug)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A request: method, raw target (path and query), headers, body.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(target: &str) -> Request {
        Request {
            method: Method::GET,
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post_json(target: &str, body: &Value) -> Request {
        Request {
            method: Method::POST,
            target: target.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }
}

/// A response read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one request on a fresh connection, with a 20 s bound on the whole exchange.
pub async fn send(to: &Target, req: &Request) -> Result<Response, String> {
    let exchange = async {
        match to {
            Target::Tcp(addr) => {
                let io = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                exchange(io, &addr.to_string(), req).await
            }
            Target::Unix(path) => {
                let io = UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                exchange(io, "localhost", req).await
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| format!("{} {}: no answer within 20 s", req.method, req.target))?
}

/// Like [`send`] over TCP, from the local address `source` (e.g. 127.0.0.2: another
/// loopback peer, outside `internal-only`'s 127.0.0.1/32).
pub async fn send_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    req: &Request,
) -> Result<Response, String> {
    let exchange_from = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let io = socket.connect(to).await.map_err(|e| e.to_string())?;
        exchange(io, &to.to_string(), req).await
    };
    tokio::time::timeout(Duration::from_secs(20), exchange_from)
        .await
        .map_err(|_| format!("{} {}: no answer within 20 s", req.method, req.target))?
}

async fn exchange<S>(io: S, host: &str, req: &Request) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(req.method.clone())
        .uri(req.target.as_str());
    if !req
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", host);
    }
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| format!("bad request {}: {e}", req.target))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// The result of a WebSocket handshake.
pub enum WsOutcome {
    /// 101 and the first text message.
    Upgraded { first_message: Value },
    /// Refused: the HTTP status, no upgrade.
    Refused(StatusCode),
}

/// Opens a WebSocket to `target` (path and query) on `addr`, with extra request headers,
/// and reads the first message.
pub async fn websocket(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<WsOutcome, String> {
    use futures_util::StreamExt;
    use tungstenite::client::IntoClientRequest;
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut request = format!("ws://{addr}{target}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().append(name, value);
        }
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((mut ws, response)) => {
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    return Err(format!("upgraded with status {}", response.status()));
                }
                while let Some(msg) = ws.next().await {
                    match msg.map_err(|e| e.to_string())? {
                        tungstenite::Message::Text(text) => {
                            let first_message = serde_json::from_str(text.as_str())
                                .map_err(|e| format!("non-JSON message {text}: {e}"))?;
                            let _ = ws.close(None).await;
                            return Ok(WsOutcome::Upgraded { first_message });
                        }
                        tungstenite::Message::Close(frame) => {
                            return Err(format!("closed before a message: {frame:?}"));
                        }
                        _ => {}
                    }
                }
                Err("stream ended before a message".into())
            }
            Err(tungstenite::Error::Http(response)) => Ok(WsOutcome::Refused(response.status())),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(Duration::from_secs(20), attempt)
        .await
        .map_err(|_| format!("WebSocket {target}: nothing within 20 s"))?
}

/// Opens a WebSocket to `target` on `addr` and reads until the server closes it, within
/// `bound`: the close code and reason.
pub async fn websocket_close(
    addr: SocketAddr,
    target: &str,
    bound: Duration,
) -> Result<(u16, String), String> {
    use futures_util::StreamExt;
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{target}"), stream)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(msg) = ws.next().await {
            if let tungstenite::Message::Close(frame) = msg.map_err(|e| e.to_string())? {
                return frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .ok_or("close frame without a code".to_owned());
            }
        }
        Err("stream ended without a close frame".into())
    };
    tokio::time::timeout(bound, attempt)
        .await
        .map_err(|_| format!("WebSocket {target}: not closed within {bound:?}"))?
}

/// An HTTP server on 127.0.0.1 that answers every request with 200 and a JSON report of
/// the method, raw target and headers (in order, repeated ones kept) it received.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req| async move {
                        Ok::<_, std::convert::Infallible>(echo(&req))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EchoUpstream { addr, task }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn echo(req: &http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let headers: Vec<Value> = req
        .headers()
        .iter()
        .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    let report = json!({
        "method": req.method().as_str(),
        "target": req.uri().to_string(),
        "headers": headers,
    });
    http::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(report.to_string())))
        .expect("static response")
}

/// All values of `name` (case-insensitive) in an echo report.
pub fn echoed(report: &Value, name: &str) -> Vec<String> {
    report["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}
