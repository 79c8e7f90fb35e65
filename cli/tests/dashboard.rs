//! The dashboard in a real headless browser (Debian's chromium driven through chromedriver's
//! WebDriver protocol) against a running localnet: the page loads, lists every miner, and a window
//! later shows the new loss point, pushed to the open page without a reload. CI installs chromium
//! and chromedriver (`.ci/run`); elsewhere the test says it was skipped when they are missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use subnet_cli::localnet::{self, LocalnetConfig};
use task::TaskSpec;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call: method, path and JSON body; the response's `value`.
fn call(addr: SocketAddr, method: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap_or_else(|| panic!("no content length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "chromedriver answered {}: {e}",
            String::from_utf8_lossy(&body)
        )
    });
    value["value"].clone()
}

fn start_driver() -> Option<Driver> {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium and chromedriver (.ci/run installs them)"
        );
        eprintln!(
            "SKIPPED: no {CHROMIUM} or {CHROMEDRIVER} (apt install chromium chromium-driver)"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let start = Instant::now();
    while TcpStream::connect(driver.addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(driver)
}

/// Polls `script` in the page until `done` holds of its result.
fn wait_for(
    driver: &Driver,
    session: &str,
    script: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let value = call(
            driver.addr,
            "POST",
            &format!("/session/{session}/execute/sync"),
            &serde_json::json!({"script": script, "args": []}),
        );
        if done(&value) {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the page never showed it: last {value}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_lists_every_miner_and_shows_each_new_window_live() {
    let Some(driver) = start_driver() else {
        return;
    };
    // The dashboard lives in a runtime of its own, so that holding the localnet between windows
    // holds nothing the page needs.
    let pages = tokio::runtime::Runtime::new().unwrap();
    let (dashboard, at) = pages
        .block_on(validator::dashboard::spawn(
            "127.0.0.1:0",
            Default::default(),
        ))
        .unwrap();

    let (shown, window_shown) = mpsc::channel::<u64>();
    let (go_on, next_window) = mpsc::channel::<()>();
    let config = LocalnetConfig {
        dashboard: Some(dashboard),
        ..LocalnetConfig::honest(
            TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK).unwrap(),
            2,
            1,
            2,
        )
    };
    let localnet = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(localnet::run(config, |line| {
                shown.send(line.window).unwrap();
                // Each window waits for the test to have looked at the page.
                let _ = next_window.recv_timeout(Duration::from_secs(120));
            }))
            .unwrap()
    });

    let first = window_shown.recv_timeout(Duration::from_secs(600)).unwrap();
    let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--no-first-run"],
        },
    }}});
    let session = call(driver.addr, "POST", "/session", &capabilities);
    let session = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {session}"))
        .to_string();
    call(
        driver.addr,
        "POST",
        &format!("/session/{session}/url"),
        &serde_json::json!({"url": format!("http://{at}/")}),
    );

    // The page lists every neuron (two miners, one validator) and the first window's point.
    let state = "return {rows: [...document.querySelectorAll('#metagraph tbody tr')].map(r => r.dataset.uid), \
                 points: document.querySelectorAll('#loss circle').length, \
                 status: document.getElementById('status').textContent};";
    let seen = wait_for(&driver, &session, state, |v| {
        v["rows"].as_array().is_some_and(|r| r.len() == 3) && v["points"] == 1
    });
    assert!(
        seen["status"]
            .as_str()
            .unwrap()
            .starts_with(&format!("window {first}:")),
        "{seen}"
    );

    // A window later the open page shows the new point, pushed by the server.
    go_on.send(()).unwrap();
    let second = window_shown.recv_timeout(Duration::from_secs(600)).unwrap();
    let seen = wait_for(&driver, &session, state, |v| v["points"] == 2);
    assert!(
        seen["status"]
            .as_str()
            .unwrap()
            .starts_with(&format!("window {second}:")),
        "{seen}"
    );
    go_on.send(()).unwrap();
    call(
        driver.addr,
        "DELETE",
        &format!("/session/{session}"),
        &serde_json::json!({}),
    );
    let report = localnet.join().unwrap();
    assert_eq!(report.windows.len(), 2);
}
