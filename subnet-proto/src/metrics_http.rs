//! A minimal Prometheus endpoint: every HTTP request on the listener gets the current metrics text.

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Binds `addr` and serves `render()` there in a background task; returns the bound address.
pub async fn spawn(
    addr: &str,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, render));
    Ok(bound)
}

/// Serves `render()` to every connection on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request))
                    .await;
            let body = render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
