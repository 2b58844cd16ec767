//! A Go service with `net/http/pprof` (built by this test with Debian's golang-go) is
//! scraped as a pprof target and its functions appear in the stored profile, with the
//! labels it sets through `pprof.Do` kept as sample labels.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_listening, Proc};

use stackwatch_store::{ProfileReader, Selector, SqliteStore};

const GO_SERVICE: &str = r#"package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"runtime/pprof"
)

var sink, sinkOrders, sinkUsers int

//go:noinline
func hotLoopStackwatch() {
	for {
		for i := 0; i < 10000000; i++ {
			sink += i * i
		}
	}
}

//go:noinline
func applyOrders() {
	for {
		for i := 0; i < 10000000; i++ {
			sinkOrders += i * i
		}
	}
}

//go:noinline
func applyUsers() {
	for {
		for i := 0; i < 10000000; i++ {
			sinkUsers += i ^ i
		}
	}
}

func main() {
	go hotLoopStackwatch()
	go pprof.Do(context.Background(), pprof.Labels("table", "orders", "op", "insert"), func(context.Context) { applyOrders() })
	go pprof.Do(context.Background(), pprof.Labels("table", "users"), func(context.Context) { applyUsers() })
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
            let profile = |sel: &str| {
                store
                    .profile(&Selector::parse(sel).unwrap(), now - 600, now + 60)
                    .ok()
            };
            let has = |p: &Option<stackwatch_profile::Profile>, f: &str| {
                p.as_ref()
                    .is_some_and(|p| p.stacks.keys().any(|s| s.contains(f)))
            };
            let all = profile(r#"{service="go-svc"}"#);
            let orders = profile(r#"{service="go-svc", table="orders"}"#);
            if has(&all, "main.hotLoopStackwatch")
                && has(&all, "main.applyUsers")
                && has(&orders, "main.applyOrders")
            {
                // pprof.Do's labels are sample labels: each selects its goroutine only.
                assert!(!has(&orders, "main.applyUsers"), "{orders:?}");
                assert!(!has(&orders, "main.hotLoopStackwatch"), "{orders:?}");
                let insert = profile(r#"{service="go-svc", op="insert"}"#);
                assert!(has(&insert, "main.applyOrders") && !has(&insert, "main.applyUsers"));
                let users = profile(r#"{service="go-svc", table="users"}"#);
                assert!(has(&users, "main.applyUsers") && !has(&users, "main.applyOrders"));
                let unlabeled = profile(r#"{service="go-svc", table=""}"#);
                assert!(has(&unlabeled, "main.hotLoopStackwatch"));
                assert!(!has(&unlabeled, "main.applyOrders"));
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Go functions never appeared in the store with their labels"
        );
    }
}
