//! The dashboard's server over real TCP: the page and its view, an event stream that sends the
//! view on connecting and again on every change, and clear refusals of anything else.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use validator::dashboard::{NeuronRow, View, spawn};

async fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

fn miner(uid: u16, weight: f64, verdict: &str) -> NeuronRow {
    NeuronRow {
        uid,
        hotkey: format!("hotkey-{uid}"),
        weight: Some(weight),
        verdict: Some(verdict.into()),
        ..NeuronRow::default()
    }
}

/// The next server-sent event's data.
async fn next_event(lines: &mut tokio::io::Lines<BufReader<TcpStream>>) -> serde_json::Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str(data).unwrap();
        }
    }
}

#[tokio::test]
async fn the_page_its_view_and_live_updates_are_served() {
    let view = View {
        title: "tiny: localnet".into(),
        loss_floor: Some(0.5),
        ..View::default()
    };
    let (dashboard, addr) = spawn("127.0.0.1:0", view).await.unwrap();

    let page = get(
        addr,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("new EventSource(\"/events\")"));
    // Nothing the page uses comes from elsewhere: no script or style is fetched, and the only
    // address in it is the SVG namespace (a name, never loaded).
    assert!(!page.contains(" src=") && !page.contains("<link"));
    assert_eq!(
        page.matches("http").count(),
        page.matches("http://www.w3.org/2000/svg").count()
    );

    let mut events = TcpStream::connect(addr).await.unwrap();
    events
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(events).lines();
    let first = next_event(&mut lines).await;
    assert_eq!(first["title"], "tiny: localnet");
    assert_eq!(first["losses"].as_array().unwrap().len(), 0);

    dashboard.update(|v| {
        v.add_window(
            7,
            1.25,
            vec![
                miner(2, 3.0, "earned"),
                miner(3, 1.0, "earned"),
                miner(4, 0.0, "fraud: lazy"),
            ],
        )
    });
    let second = next_event(&mut lines).await;
    assert_eq!(
        second["losses"],
        serde_json::json!([{"window": 7, "loss": 1.25}])
    );
    assert_eq!(second["neurons"].as_array().unwrap().len(), 3);
    let shares: Vec<f64> = second["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share"].as_f64().unwrap())
        .collect();
    assert_eq!(shares, vec![0.75, 0.25, 0.0]);
    assert_eq!(
        second["rejections"],
        serde_json::json!([{"window": 7, "uid": 4, "verdict": "fraud: lazy"}])
    );

    let json = get(
        addr,
        "GET /view?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(json.contains("application/json"));
    let body: serde_json::Value =
        serde_json::from_str(json.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body, second);

    assert!(
        get(
            addr,
            "GET /secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 404")
    );
    assert!(
        get(
            addr,
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 405")
    );
    assert!(
        get(addr, "nonsense\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400")
    );
}

#[test]
fn the_view_keeps_a_bounded_history() {
    let mut view = View::default();
    for w in 0..600 {
        view.add_window(w, 1.0, vec![miner(1, 1.0, "refused: late")]);
    }
    assert_eq!(view.losses.len(), 500);
    assert_eq!(view.losses[0].window, 100);
    assert!(view.shares.iter().all(|s| s.window >= 100));
    assert_eq!(view.rejections.len(), 50);
    // A window shown again replaces its point.
    view.add_window(599, 2.0, vec![]);
    assert_eq!(view.losses.iter().filter(|p| p.window == 599).count(), 1);
    assert_eq!(view.losses.last().unwrap().loss, 2.0);
}
