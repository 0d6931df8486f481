//! Bad flags and bad files: each exits non-zero with one clear message, never a panic.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::phase;
use crate::support::run_bazaar;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit code `code`, a stderr line starting with `error:` that mentions `fragment`, no panic.
fn assert_fails(args: &[&str], code: i32, fragment: &str) {
    phase!("bazaar {} -> exit {code}", args.join(" "));
    let output = run_bazaar(args, RUN_TIMEOUT);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert!(
        err.contains(fragment),
        "stderr should mention {fragment:?}: {err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("error:")),
        "one line starting with `error:`: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write fixture");
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("c.db");
    let db = db.to_str().expect("utf-8 path");
    assert_fails(
        &["catalog", "--listen", "127.0.0.1:99999", "--db", db],
        2,
        "invalid value",
    );
    assert_fails(
        &["catalog", "--listen", "nowhere", "--db", db],
        2,
        "invalid value",
    );
    assert_fails(
        &["catalog", "--db", db, "--restock-interval", "10"],
        2,
        "not a duration",
    );
    assert_fails(
        &["catalog", "--db", db, "--restock-interval", "1ms"],
        2,
        "shorter than",
    );
    assert_fails(
        &["catalog", "--db", db, "--restock-to", "0"],
        2,
        "--restock-to",
    );
    assert_fails(&["order", "--id", "0"], 2, "replica id");
    assert_fails(
        &["order", "--id", "1", "--peers", "1=localhost:1"],
        2,
        "http://",
    );
    assert_fails(
        &[
            "order",
            "--id",
            "4",
            "--peers",
            "1=http://127.0.0.1:1,2=http://127.0.0.1:2",
        ],
        2,
        "not this replica",
    );
    assert_fails(
        &["order", "--id", "1", "--min-copies", "2"],
        2,
        "--min-copies 2 must be from 1",
    );
    assert_fails(
        &["order", "--id", "1", "--feed-lease", "1h"],
        2,
        "--feed-lease 3600s must be from",
    );
    assert_fails(
        &["frontend", "--catalogs", "ftp://x:1"],
        2,
        "is not an http:// or https:// URL",
    );
    assert_fails(
        &["frontend", "--catalogs", ""],
        2,
        "--catalogs lists 0 catalogs",
    );
    assert_fails(&["frontend", "--cache-size", "0"], 2, "--cache-size");
    assert_fails(&["frontend", "--replicas", ""], 2, "no order replica");
    assert_fails(&["up", "--catalogs", "0"], 2, "--catalogs 0 must be from 1");
    assert_fails(&["up", "--replicas", "0"], 2, "--replicas");
    assert_fails(&["up", "--cache-size", "0"], 2, "--cache-size");
    assert_fails(&["nonsense"], 2, "unrecognized subcommand");

    phase!("issue 9: a service without a cluster key refuses to start unless --insecure");
    let key = "k".repeat(64);
    for service in [
        vec!["catalog", "--db", db],
        vec!["order", "--id", "1", "--db", db],
        vec!["frontend"],
    ] {
        assert_fails(&service, 2, "no cluster key");
        let mut both = service.clone();
        both.extend(["--insecure", "--cluster-key", &key]);
        assert_fails(&both, 2, "--insecure");
        let mut short = service.clone();
        short.extend(["--cluster-key", "short"]);
        assert_fails(&short, 2, "--cluster-key");
        let mut missing = service.clone();
        missing.extend(["--cluster-key-file", "/nonexistent/cluster.key"]);
        assert_fails(&missing, 2, "--cluster-key-file");
    }
    assert!(
        !Path::new(db).exists(),
        "nothing was opened before the key was checked"
    );
}

#[test]
fn bad_files_exit_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();

    phase!("a catalog CSV with a bad line names the file and the line");
    write(
        &dir.path().join("bad.csv"),
        "name,price,quantity\nA,1.00,5\nB,cheap,5\n",
    );
    assert_fails(
        &[
            "order",
            "--insecure",
            "--id",
            "1",
            "--db",
            &path("fresh.db"),
            "--stocks",
            &path("bad.csv"),
        ],
        2,
        "bad.csv line 3: price \"cheap\"",
    );
    assert_fails(
        &[
            "order",
            "--insecure",
            "--id",
            "1",
            "--db",
            &path("fresh2.db"),
            "--stocks",
            &path("missing.csv"),
        ],
        2,
        "--stocks",
    );

    phase!("an unwritable data directory (a path under a regular file)");
    write(&dir.path().join("plain-file"), "x");
    assert_fails(
        &[
            "catalog",
            "--insecure",
            "--db",
            &path("plain-file/sub/c.db"),
        ],
        2,
        "cannot create data directory",
    );
    assert_fails(
        &[
            "order",
            "--insecure",
            "--id",
            "1",
            "--db",
            &path("plain-file/o.db"),
        ],
        2,
        "cannot create data directory",
    );

    phase!("database files that are not databases");
    write(&dir.path().join("junk.db"), &"junk".repeat(2000));
    assert_fails(
        &["catalog", "--insecure", "--db", &path("junk.db")],
        1,
        "is not a SQLite database",
    );
    assert_fails(
        &["order", "--insecure", "--id", "1", "--db", &path("junk.db")],
        1,
        "is not a SQLite database",
    );

    phase!("verify on a directory without databases");
    assert_fails(
        &["verify", "--data-dir", &path("")],
        1,
        "no order replica databases",
    );
}

#[test]
fn a_busy_port_or_database_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let db = dir.path().join("c.db");
    let db = db.to_str().expect("utf-8");
    assert_fails(
        &["catalog", "--insecure", "--listen", &addr, "--db", db],
        1,
        "cannot listen on",
    );

    phase!("a second catalog on the same database is refused while the first runs");
    let shared = dir.path().join("shared.db");
    let shared = shared.to_str().expect("utf-8");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let first = std::process::Command::new(crate::support::exe())
        .args(["catalog", "--insecure", "--listen", &listen, "--db", shared])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Killed however the test ends.
    let _first = crate::support::Extra::new(first, format!("http://{listen}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "first catalog never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_fails(
        &[
            "catalog",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--db",
            shared,
        ],
        2,
        "in use by another process",
    );
}
