//! A Prometheus endpoint on axum: any request, whatever its path, gets the current metrics text.

use axum::Router;
use axum::http::header;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the metrics are rendered as (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenMetrics text of every metric in `registries`, in order, ended once.
pub fn render(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        encode_registry(&mut out, registry).expect("writing to a String cannot fail");
    }
    encode_eof(&mut out).expect("writing to a String cannot fail");
    out
}

/// Binds `addr` and serves `render()` there in a background task; returns the bound address.
pub async fn spawn(
    addr: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, render));
    Ok(bound)
}

/// Serves `render()` to every request on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let app = Router::new().fallback(move || {
        let render = render.clone();
        async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}
