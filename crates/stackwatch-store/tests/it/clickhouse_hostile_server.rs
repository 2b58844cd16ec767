//! Something that is not ClickHouse at `[store] url`: a clear startup error naming the
//! key, never a panic or a hang. Needs no server (a loopback listener plays the peer).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use stackwatch_store::{ClickHouseOptions, ClickHouseStore};

/// Answers every request with `response`, until the test ends.
fn peer(response: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(response);
        }
    });
    format!("http://{addr}")
}

fn open(url: String) -> String {
    match ClickHouseStore::open(ClickHouseOptions {
        url,
        timeout: Duration::from_secs(3),
        ..Default::default()
    }) {
        Ok(_) => panic!("opened a store on something that is not ClickHouse"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_web_server_that_is_not_clickhouse_is_refused_naming_the_url() {
    let e = open(peer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html>x</html",
    ));
    assert!(e.starts_with("store.url:"), "{e}");
    assert!(e.contains("too old") || e.contains("ClickHouse"), "{e}");
}

#[test]
fn an_error_page_or_garbage_bytes_are_refused_naming_the_url() {
    let e = open(peer(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
    ));
    assert!(e.starts_with("store.url:"), "{e}");
    let e = open(peer(b"\x00\xff garbage that is not HTTP\r\n\r\n"));
    assert!(e.starts_with("store.url:"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_peer_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts (the kernel's backlog) and never answers.
    let started = std::time::Instant::now();
    let e = open(url);
    assert!(e.starts_with("store.url:"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(listener);
}
