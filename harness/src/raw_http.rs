//! HTTP/1.1 spoken by hand, for tests that send what a client library would
//! not (chunked bodies, oversized or half-sent heads, held keep-alive
//! connections) and read exactly what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a raw exchange ended.
#[derive(Debug)]
pub enum Raw {
    /// An answer arrived: status and the whole text received.
    Answer(u16, String),
    /// The server closed (EOF or reset) without a status line.
    Closed,
}

impl Raw {
    /// Status and JSON body of an answer (Null when the body is not JSON);
    /// panics if the server closed without a whole answer head.
    pub fn json(&self) -> (u16, serde_json::Value) {
        match self {
            Raw::Answer(status, text) => {
                let (_, body) = text
                    .split_once("\r\n\r\n")
                    .unwrap_or_else(|| panic!("no complete HTTP answer head: {text:?}"));
                (
                    *status,
                    serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
                )
            }
            Raw::Closed => panic!("the server closed without an HTTP answer"),
        }
    }
}

/// The status code of an HTTP/1.x answer's first line.
fn status_of(text: &str) -> Option<u16> {
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Reads until the server closes the connection (EOF or reset), at most
/// `deadline`; panics when the connection is still open then.
pub async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Raw {
    let mut got = Vec::new();
    let done = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "the server kept the connection open past {deadline:?}"
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    match status_of(&text) {
        Some(status) => Raw::Answer(status, text),
        None => Raw::Closed,
    }
}

/// Sends `request` on a new connection (a write the server cuts short is
/// not an error here: its answer, or its closing, is the verdict) and reads
/// until the server closes, at most `deadline`.
pub async fn exchange(addr: SocketAddr, request: &[u8], deadline: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, deadline).await
}

/// Reads exactly one answer (head and a Content-Length body) from a
/// keep-alive connection. Returns status and body; panics on EOF.
pub async fn read_one_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before an answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = status_of(&head).unwrap_or_else(|| panic!("no status line in {head:?}"));
    let len: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    while got.len() < head_end + len {
        let n = stream.read(&mut buf).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        got.extend_from_slice(&buf[..n]);
    }
    (status, got[head_end..head_end + len].to_vec())
}

/// Whether `GET path` on a fresh connection that asks to be closed answers
/// `status` within 2 s: a probe that holds no connection slot afterwards.
pub async fn answers(addr: SocketAddr, path: &str, status: u16) -> bool {
    let probe = tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut text = Vec::new();
        s.read_to_end(&mut text).await.ok()?;
        status_of(&String::from_utf8_lossy(&text))
    });
    matches!(probe.await, Ok(Some(s)) if s == status)
}
