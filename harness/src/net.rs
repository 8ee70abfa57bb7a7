//! Loopback addresses: free ports to listen on, a URL nothing answers, and
//! the check that keeps every suite's traffic on 127.0.0.0/8.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A loopback port free right now (bound, read, released). Another process
/// may take it before it is used; callers that can, listen on port 0.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// `http://127.0.0.1:<port>/hook` where nothing listens: a delivery target
/// that refuses connections.
pub fn refused_url() -> String {
    format!(
        "http://127.0.0.1:{}/hook",
        free_port().expect("a free loopback port")
    )
}

/// Refuses any address that is not loopback: the suites never send
/// anything off this machine.
pub fn ensure_loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: the harness only uses 127.0.0.0/8");
    }
    Ok(())
}

/// Accepts connections on `listener` for ever, handing each one (with
/// TCP_NODELAY) to `serve`; a failed accept is logged (as `who`) and
/// retried after 10 ms.
pub async fn accept_forever(
    listener: tokio::net::TcpListener,
    who: &str,
    mut serve: impl FnMut(tokio::net::TcpStream),
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serve(stream);
            }
            Err(e) => {
                eprintln!("{who}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
