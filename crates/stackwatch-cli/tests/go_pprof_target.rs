//! A Go service with `net/http/pprof` (built by this test with Debian's golang-go) is
//! scraped as a pprof target and its functions appear in the stored profile.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_listening, Proc};

use stackwatch_store::{ProfileStore, Selector, SqliteStore};

const GO_SERVICE: &str = r#"package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
)

var sink int

//go:noinline
func hotLoopStackwatch() {
	for {
		for i := 0; i < 10000000; i++ {
			sink += i * i
		}
	}
}

func main() {
	go hotLoopStackwatch()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("listening on", l.Addr())
	http.Serve(l, nil)
}
"#;

#[test]
#[ignore = "needs golang-go: run via scripts/test.sh"]
fn a_go_pprof_endpoint_is_scraped_and_its_functions_stored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.go"), GO_SERVICE).unwrap();
    let status = Command::new("go")
        .args(["build", "-o", "gosvc", "main.go"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GO111MODULE", "off")
        .status()
        .expect("go is installed (apt-get install golang-go)");
    assert!(status.success());
    let (_go, addr) = spawn_listening(Command::new(dir.path().join("gosvc")));
    let config = dir.path().join("stackwatch.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[scrape]\ninterval = \"2s\"\ntimeout = \"3s\"\npprof_seconds = \"1s\"\n\
             [storage]\nflush_interval = \"100ms\"\n\
             [[targets]]\nurl = \"http://{addr}/debug/pprof/profile\"\nkind = \"pprof\"\nlabels = {{ service = \"go-svc\" }}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let _c = Proc(
        Command::new(env!("CARGO_BIN_EXE_stackwatch"))
            .args(["server", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let db = dir.path().join("data/stackwatch.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(store) = SqliteStore::open_reader(&db) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            if let Ok(p) = store.profile(
                &Selector::parse(r#"{service="go-svc"}"#).unwrap(),
                now - 600,
                now + 60,
            ) {
                if p.stacks
                    .keys()
                    .any(|s| s.contains("main.hotLoopStackwatch"))
                {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Go function never appeared in the store"
        );
    }
}
