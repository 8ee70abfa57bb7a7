//! One HTTP/1.1 keep-alive connection to a loopback server, on plain hyper:
//! what the load generators post with and what the harness probes and
//! manages webhookd through (readiness, subscriptions).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::HOST;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::net::ensure_loopback;

/// Time one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    driver: tokio::task::JoinHandle<()>,
}

impl Conn {
    /// Connects to `addr` (loopback only), bounded by a connect timeout.
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        ensure_loopback(addr)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {addr}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            driver,
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let call = async {
            self.sender.ready().await?;
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, &self.host);
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&mut self, path: &str, body: String) -> Result<(StatusCode, Bytes)> {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Whether `GET path` on a fresh connection to `addr` answers 2xx.
pub async fn answers_2xx(addr: SocketAddr, path: &str) -> bool {
    match Conn::connect(addr).await {
        Ok(mut c) => matches!(c.get(path).await, Ok((s, _)) if s.is_success()),
        Err(_) => false,
    }
}
