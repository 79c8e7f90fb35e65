//! Gradient transport over loopback: a payload streamed by `GetGradient` the way miners serve it
//! (the project's server builder and connection limits, 64 KiB chunks sharing one buffer, the
//! validator's client limits), against a plain tokio TCP copy of the same bytes in the same run.
//! Sizes: tiny-lm's payload in its task layout, and the dense f32 gradient of tiny-lm and of a
//! 100M-parameter model; then one client fetching the tiny-lm payload from 64 servers at once.
//! The last line is one JSON object for `bench/run.sh`.
//!
//! `cargo run --release -p subnet-proto --example transport_bench -- [REPEATS]`

use bytes::Bytes;
use futures::StreamExt;
use pseudo_gradient::codec::Layout;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use subnet_proto::{limits, pb, server, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};

type Chunks = Pin<Box<dyn futures::Stream<Item = Result<pb::GradientChunk, Status>> + Send>>;

/// Serves one payload to every `GetGradient`; the other calls are not part of the measure.
struct Payload(Bytes);

#[tonic::async_trait]
impl pb::miner_server::Miner for Payload {
    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }

    async fn get_commitment(
        &self,
        _: Request<pb::CommitmentRequest>,
    ) -> Result<Response<pb::Commitment>, Status> {
        Err(Status::unimplemented("transport benchmark"))
    }

    type GetGradientStream = Chunks;

    async fn get_gradient(
        &self,
        _: Request<pb::GradientRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let chunks = stream::slices(self.0.clone(), limits::CHUNK_BYTES).map(|data| {
            Ok(pb::GradientChunk {
                part: Some(pb::gradient_chunk::Part::Data(data)),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

async fn grpc_server(payload: Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let incoming = server::incoming(listener, server::ConnectionLimits::new(128));
    tokio::spawn(async move {
        server::builder()
            .expect("server builder")
            .add_service(pb::miner_server::MinerServer::new(Payload(payload)))
            .serve_with_incoming(incoming)
            .await
    });
    format!("http://{addr}")
}

async fn grpc_client(url: &str) -> pb::miner_client::MinerClient<tonic::transport::Channel> {
    let addr = url.trim_start_matches("http://");
    let channel = subnet_proto::tls::endpoint(addr)
        .expect("endpoint")
        .timeout(limits::REQUEST_TIMEOUT)
        .connect()
        .await
        .expect("connect");
    pb::miner_client::MinerClient::new(channel).max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
}

/// Fetches the whole payload; its length.
async fn grpc_fetch(
    client: &mut pb::miner_client::MinerClient<tonic::transport::Channel>,
) -> usize {
    let mut chunks = client
        .get_gradient(pb::GradientRequest::default())
        .await
        .expect("get_gradient")
        .into_inner();
    let mut received = Vec::new();
    while let Some(chunk) = chunks.next().await {
        if let Some(pb::gradient_chunk::Part::Data(d)) = chunk.expect("chunk").part {
            received.extend_from_slice(&d);
        }
    }
    received.len()
}

/// A server that writes the payload to every connection, then closes it.
async fn tcp_server(payload: Bytes) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let payload = payload.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let _ = socket.write_all(&payload).await;
            });
        }
    });
    addr
}

async fn tcp_fetch(addr: std::net::SocketAddr) -> usize {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let _ = socket.set_nodelay(true);
    let mut received = Vec::new();
    socket.read_to_end(&mut received).await.expect("read");
    received.len()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median seconds of `repeats` runs of `f`, after one run to warm up.
async fn time<F, Fut>(repeats: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed().as_secs_f64());
    }
    median(times)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .map_or(7, |a| a.parse().expect("REPEATS"));
    let tiny = 3_323_648;
    let sizes = [
        (
            "tiny-lm, task layout",
            Layout::PackedTopK {
                chunk: 4096,
                k: 8,
                bits: 2,
            }
            .payload_len(tiny),
        ),
        ("tiny-lm, dense f32", Layout::DenseF32.payload_len(tiny)),
        (
            "100M parameters, dense f32",
            Layout::DenseF32.payload_len(100_000_000),
        ),
    ];
    let mut rows = Vec::new();
    for (name, bytes) in sizes {
        let payload = stream::shared(Arc::new(vec![7u8; bytes]));
        let url = grpc_server(payload.clone()).await;
        let client = grpc_client(&url).await;
        let reps = if bytes > 100 << 20 {
            repeats.min(3)
        } else {
            repeats
        };
        let grpc = time(reps, || {
            // A clone shares the connection.
            let mut client = client.clone();
            async move { assert_eq!(grpc_fetch(&mut client).await, bytes) }
        })
        .await;
        let addr = tcp_server(payload).await;
        let tcp = time(
            reps,
            || async move { assert_eq!(tcp_fetch(addr).await, bytes) },
        )
        .await;
        let mbps = |s: f64| bytes as f64 / s / 1e6;
        println!(
            "{name:<28} {bytes:>11} bytes  gRPC {:>8.1} MB/s {:>9.2} ms   TCP {:>8.1} MB/s {:>9.2} ms",
            mbps(grpc),
            grpc * 1e3,
            mbps(tcp),
            tcp * 1e3
        );
        rows.push(format!(
            "{{\"name\": \"{name}\", \"bytes\": {bytes}, \"grpc_ms\": {:.3}, \"tcp_ms\": {:.3}}}",
            grpc * 1e3,
            tcp * 1e3
        ));
    }

    // One validator fetching the same window's payloads from 64 miners at once.
    let (fanout, bytes) = (64, sizes[0].1);
    let payload = stream::shared(Arc::new(vec![7u8; bytes]));
    let mut clients = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..fanout {
        clients.push(grpc_client(&grpc_server(payload.clone()).await).await);
        addrs.push(tcp_server(payload.clone()).await);
    }
    let grpc = time(repeats, || {
        let clients = clients.clone();
        async move {
            let fetches = clients
                .into_iter()
                .map(|mut c| async move { grpc_fetch(&mut c).await });
            let got = futures::future::join_all(fetches).await;
            assert!(got.iter().all(|&n| n == bytes));
        }
    })
    .await;
    let tcp = time(repeats, || {
        let addrs = addrs.clone();
        async move {
            let got = futures::future::join_all(addrs.into_iter().map(tcp_fetch)).await;
            assert!(got.iter().all(|&n| n == bytes));
        }
    })
    .await;
    println!(
        "{fanout} miners at once, {bytes} bytes each: gRPC {:.2} ms, TCP {:.2} ms",
        grpc * 1e3,
        tcp * 1e3
    );
    println!(
        "{{\"repeats\": {repeats}, \"sizes\": [{}], \"fanout\": {{\"miners\": {fanout}, \"bytes\": {bytes}, \"grpc_ms\": {:.3}, \"tcp_ms\": {:.3}}}}}",
        rows.join(", "),
        grpc * 1e3,
        tcp * 1e3
    );
}
