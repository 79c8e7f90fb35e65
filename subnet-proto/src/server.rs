//! What every gRPC server of the subnet accepts before a request is decoded: at most
//! `MAX_CONNECTIONS_PER_ADDRESS` open connections from one IP address (one more is closed as soon as
//! it is accepted, and counted; this machine's own loopback addresses, where a local subnet runs its
//! miners and validators side by side, are not limited unless asked), TCP keepalive, and HTTP/2
//! keepalive pings that drop peers which stopped answering.

use futures::Stream;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Open connections one address may hold. Honest peers hold one per server (clients reuse their
/// channel); a host running many miners behind one address still fits.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Keepalive probes on idle connections, TCP and HTTP/2 alike.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Live connections per address, shared by a listener's accepted connections.
#[derive(Default)]
pub struct ConnectionLimits {
    per_address: usize,
    limit_loopback: bool,
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

impl ConnectionLimits {
    /// `per_address` open connections for every address, this machine's own included.
    pub fn new(per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            limit_loopback: true,
            ..Self::default()
        })
    }

    /// `per_address` open connections for every address but loopback ones.
    pub fn remote(per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            per_address,
            ..Self::default()
        })
    }

    /// Connections closed on arrival because their address held its limit already.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Open connections from `address`.
    pub fn open(&self, address: IpAddr) -> usize {
        let open = self.open.lock().expect("connection count lock");
        open.get(&address).copied().unwrap_or(0)
    }

    /// None when `address` holds its limit already, else its place while the connection is open.
    fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        if address.is_loopback() && !self.limit_loopback {
            return Some(Slot {
                limits: self.clone(),
                address: None,
            });
        }
        let mut open = self.open.lock().expect("connection count lock");
        let count = open.entry(address).or_default();
        if *count >= self.per_address {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
        Some(Slot {
            limits: self.clone(),
            address: Some(address),
        })
    }
}

/// One admitted connection's place in its address's count (None for an address not counted), given
/// back when the connection closes.
struct Slot {
    limits: Arc<ConnectionLimits>,
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(address) = self.address else {
            return;
        };
        let mut open = self.limits.open.lock().expect("connection count lock");
        if let Some(count) = open.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&address);
            }
        }
    }
}

/// An accepted connection that holds its address's slot while it is open.
pub struct Admitted {
    stream: TcpStream,
    _slot: Slot,
}

/// Connections accepted on `listener`, those over their address's limit closed on arrival. Accept
/// errors (out of file descriptors, a reset before accept) are logged and skipped.
pub fn incoming(
    listener: TcpListener,
    limits: Arc<ConnectionLimits>,
) -> impl Stream<Item = io::Result<Admitted>> + Send + 'static {
    futures::stream::unfold((listener, limits), |(listener, limits)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match limits.admit(peer.ip()) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    let admitted = Admitted {
                        stream,
                        _slot: slot,
                    };
                    return Some((Ok(admitted), (listener, limits)));
                }
                None => {
                    tracing::debug!(%peer, "closing a connection over the per-address limit");
                    drop(stream);
                }
            }
        }
    })
}

/// The server builder every service uses: request timeout, per-connection concurrency, keepalive,
/// and TLS when the process serves it (`crate::tls`).
pub fn builder() -> Result<tonic::transport::Server, tonic::transport::Error> {
    let server = tonic::transport::Server::builder()
        .timeout(crate::limits::REQUEST_TIMEOUT)
        .concurrency_limit_per_connection(16)
        .tcp_keepalive(Some(KEEPALIVE))
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    match crate::tls::server_config() {
        Some(tls) => server.tls_config(tls),
        None => Ok(server),
    }
}

/// Serves one gRPC service on `listener` until `shutdown` completes: the project's builder
/// (`builder`), connections admitted under `limits` (`incoming`). Miners and validators both serve
/// through it.
pub async fn serve<S>(
    service: S,
    listener: TcpListener,
    limits: Arc<ConnectionLimits>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    builder()?
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener, limits), shutdown)
        .await
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn an_address_holds_at_most_its_limit_and_gets_slots_back_on_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ConnectionLimits::new(2);
        let mut accepted = Box::pin(incoming(listener, limits.clone()));
        let first = TcpStream::connect(address).await.unwrap();
        let a = accepted.next().await.unwrap().unwrap();
        let _second = TcpStream::connect(address).await.unwrap();
        let _b = accepted.next().await.unwrap().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(limits.open(loopback), 2);
        // The third is closed on arrival; once the first closes, a fourth gets in.
        let mut third = TcpStream::connect(address).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(waiting.is_err(), "the third connection was admitted");
        assert_eq!(limits.refused(), 1);
        drop(a);
        drop(first);
        let _fourth = TcpStream::connect(address).await.unwrap();
        let _d = accepted.next().await.unwrap().unwrap();
        assert_eq!(limits.refused(), 1);
        assert_eq!(limits.open(loopback), 2);
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut third, &mut byte).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the refused connection is closed"
        );

        // Limits for remote addresses leave this machine's own alone.
        let remote = ConnectionLimits::remote(1);
        let kept: Vec<_> = (0..3).map(|_| remote.admit(loopback)).collect();
        assert!(kept.iter().all(Option::is_some));
        assert_eq!((remote.open(loopback), remote.refused()), (0, 0));
        let elsewhere: IpAddr = "192.0.2.7".parse().unwrap();
        let first = remote.admit(elsewhere);
        assert!(first.is_some() && remote.admit(elsewhere).is_none());
    }
}
