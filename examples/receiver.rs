//! A small webhook receiver for trying webhookd by hand: prints every
//! delivery and answers with a fixed status.
//!
//! cargo run --example receiver -- [ADDR] [STATUS]
//! (defaults: 127.0.0.1:9000 and 200; e.g. `... 127.0.0.1:9001 500` for a
//! failing target whose retries you can watch)

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let status: u16 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let status = StatusCode::from_u16(status)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("receiver listening on http://{addr}/ answering {status}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                let id = header(&req, "webhook-id");
                let event = header(&req, "x-event-type");
                let signed = req.headers().contains_key("webhook-signature");
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                println!(
                    "{} webhook-id={id} event={event} signed={signed} body={} -> {}",
                    chrono::Utc::now().format("%H:%M:%S%.3f"),
                    String::from_utf8_lossy(&body),
                    status.as_u16()
                );
                let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                *resp.status_mut() = status;
                Ok::<_, Infallible>(resp)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}
