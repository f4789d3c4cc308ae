//! A bare forward proxy on veto's stack, for scripts/bench-proxy only: the
//! same tokio runtime, hyper server and hyper-util pooled client veto uses,
//! and nothing else (no policy, no identity, no audit, no limits). Its
//! throughput is the floor of what veto's stack costs on the machine, which
//! tells veto's own work apart from the libraries'.
//!
//! ```sh
//! cargo run --release -p veto-proxy --example bare_proxy -- 127.0.0.1:3129
//! ```
//!
//! It forwards absolute-URI requests to whatever they name: never run it
//! anywhere but on loopback for a benchmark.

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use veto_proxy::answer::{Body, BoxError};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3129".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // As veto's pool (forward.rs).
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let req =
                        hyper::Request::from_parts(parts, body.map_err(BoxError::from).boxed());
                    let resp = match client.request(req).await {
                        Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed()),
                        Err(e) => {
                            let mut r = hyper::Response::new(
                                http_body_util::Full::from(e.to_string())
                                    .map_err(BoxError::from)
                                    .boxed(),
                            );
                            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                            r
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
