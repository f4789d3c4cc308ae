//! The proxy corpus (`tests/proxy/*.yaml`): raw client bytes sent to a real
//! `veto run`, and what must happen: the answer's status and headers, the
//! exact bytes the upstream received (an echo upstream sends them back),
//! and the fields of the request's audit record. One veto per file; every
//! case also checks that the answer's `Veto-Request-Id` names a record and
//! that no `Veto-*` header an upstream sent reaches the client.
//!
//! A file:
//!
//! ```yaml
//! policy: |            # the policy text
//!   version: 1
//! resolve: [a.test]    # names answered with the upstreams' address (127.0.0.1)
//! args: [--body-timeout, 1s]
//! cases:
//!   - name: what it shows
//!     send: "GET http://a.test:{port}/ HTTP/1.1\r\nHost: b.test\r\n\r\n"
//!     # or pieces and pauses: send: ["GET http://a", {pause_ms: 200}, "..."]
//!     # a TLS ClientHello: {tls_hello: NAME, records: N, truncate: K, trickle: B, pause_ms: P}
//!     #   (handshake in records of N bytes; only its first K bytes; sent B
//!     #   bytes at a time, P ms apart)
//!     read_ms: 15000      # how long to read the answer at most
//!     expect:
//!       status: 200
//!       headers: { via: "1.1 veto" }       # answer headers (value substrings)
//!       no_headers: [x-forged]
//!       reached: true                      # whether the upstream got a request
//!       upstream_contains: ["host: a.test:{port}\r\n"]
//!       upstream_lacks: ["b.test"]
//!       body_contains: ["reason"]
//!       record: { decision: deny, rule: default, dns_lookup: null }
//! ```
//!
//! `{port}` is the echo upstream's port. In `record`, `null` means the
//! field is absent.

mod common;

use common::{Veto, eventually};
use serde_json::{Map, Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veto_policy::yaml::{self, Node};

/// YAML as JSON values: scalars are strings, but plain `true`, `false`,
/// `null` and integers are read as such.
fn to_json(n: &Node<'_>) -> Value {
    match &n.value {
        yaml::Value::Scalar { text, plain } => {
            if *plain {
                if n.is_null() {
                    return Value::Null;
                }
                match text.as_ref() {
                    "true" => return Value::Bool(true),
                    "false" => return Value::Bool(false),
                    t => {
                        if let Ok(i) = t.parse::<i64>() {
                            return json!(i);
                        }
                    }
                }
            }
            Value::String(text.to_string())
        }
        yaml::Value::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        yaml::Value::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// Every request the echo upstream received, raw, in order.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A plain HTTP/1.1 upstream that answers each request with its exact
/// bytes (head and body, chunked framing included), and tries to forge
/// veto's headers.
fn echo_upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || echo(stream, &log));
        }
    });
    (addr, seen)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How many bytes of `buf` a whole request takes, once it is all there.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if field("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        return find(&buf[head_end..], b"0\r\n\r\n").map(|i| head_end + i + 5);
    }
    let len: usize = field("content-length:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn echo(mut s: TcpStream, log: &Mutex<Vec<Vec<u8>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(n) = request_len(&buf) {
            let req: Vec<u8> = buf.drain(..n).collect();
            log.lock().unwrap().push(req.clone());
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nveto-decision: allow\r\nveto-rule: forged-by-upstream\r\ncontent-length: {}\r\n\r\n",
                req.len()
            );
            if s.write_all(head.as_bytes()).is_err() || s.write_all(&req).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                // Bytes that never made a request (a tunnel's) still count
                // as having reached the upstream.
                if !buf.is_empty() {
                    log.lock().unwrap().push(buf);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A TLS ClientHello naming `sni`, as records of at most `size` bytes of
/// handshake each (0: one record).
fn client_hello(sni: &str, size: usize) -> Vec<u8> {
    veto_proxy::parsers::sample_hello(Some(sni), size, &[])
}

/// What came back: status (0 if nothing), head and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        common::header(&self.head, name)
    }
}

/// Sends the pieces (strings, or `{pause_ms}`) on one connection and reads
/// one answer: its head, then its body by Content-Length, or until the
/// connection closes.
fn exchange(proxy: SocketAddr, send: &Value, port: u16, read_ms: u64) -> Answer {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_nodelay(true).unwrap();
    let pieces = match send {
        Value::Array(p) => p.clone(),
        one => vec![one.clone()],
    };
    for p in &pieces {
        match p {
            Value::String(text) => {
                if s.write_all(subst(text, port).as_bytes()).is_err() {
                    break;
                }
            }
            Value::Object(o) if o.contains_key("tls_hello") => {
                // {tls_hello: NAME, records: N, truncate: K, trickle: B, pause_ms: P}
                let num = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
                let mut hello = client_hello(o["tls_hello"].as_str().unwrap_or(""), num("records"));
                if num("truncate") > 0 {
                    hello.truncate(num("truncate"));
                }
                let step = if num("trickle") > 0 {
                    num("trickle")
                } else {
                    hello.len()
                };
                for piece in hello.chunks(step) {
                    if s.write_all(piece).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(num("pause_ms") as u64));
                }
            }
            Value::Object(o) => {
                let ms = o["pause_ms"]
                    .as_u64()
                    .expect("a piece is a string, {tls_hello} or {pause_ms}");
                std::thread::sleep(Duration::from_millis(ms));
            }
            other => panic!("bad piece {other}"),
        }
    }
    let deadline = Instant::now() + Duration::from_millis(read_ms);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if let Some(head_end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len = common::header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|l| buf.len() >= head_end + 4 + l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn subst(text: &str, port: u16) -> String {
    text.replace("{port}", &port.to_string())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one corpus file; returns its failures.
fn run_file(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let root = yaml::parse(&text)
        .unwrap()
        .expect("a corpus file is not empty");
    let file = to_json(&root);
    let (up, seen) = echo_upstream();
    let port = up.port();
    let mut args: Vec<String> = Vec::new();
    for name in strings(&file["resolve"]) {
        args.extend(["--resolve".into(), format!("{name}=127.0.0.1")]);
    }
    args.extend(strings(&file["args"]).iter().map(|a| subst(a, port)));
    let policy = subst(file["policy"].as_str().expect("a policy"), port);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let veto = Veto::start(&policy, &arg_refs);
    let mut failures = Vec::new();
    for case in file["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?");
        let before = seen.lock().unwrap().len();
        let read_ms = case["read_ms"].as_u64().unwrap_or(15_000);
        let answer = exchange(veto.addr, &case["send"], port, read_ms);
        let expect = &case["expect"];
        if expect["reached"] == true {
            // A tunnel's bytes are logged when its connection closes.
            eventually(|| seen.lock().unwrap().len() > before);
        }
        let got: Vec<u8> = seen.lock().unwrap()[before..].concat();
        let got = String::from_utf8_lossy(&got).into_owned();
        let mut fail = |what: String| {
            failures.push(format!(
                "{}: {name}: {what}\n--- answer\n{}\n\n{}\n--- upstream received\n{got}",
                path.display(),
                answer.head,
                answer.body
            ))
        };
        if let Some(status) = expect["status"].as_u64()
            && u64::from(answer.status) != status
        {
            fail(format!("status {} (expected {status})", answer.status));
            continue;
        }
        if let Some(reached) = expect["reached"].as_bool()
            && reached == got.is_empty()
        {
            fail(format!(
                "upstream reached: {} (expected {reached})",
                !got.is_empty()
            ));
        }
        for want in strings(&expect["upstream_contains"]) {
            if !got.contains(&subst(&want, port)) {
                fail(format!("the upstream did not receive {want:?}"));
            }
        }
        for unwanted in strings(&expect["upstream_lacks"]) {
            if got.contains(&subst(&unwanted, port)) {
                fail(format!("the upstream received {unwanted:?}"));
            }
        }
        for want in strings(&expect["body_contains"]) {
            if !answer.body.contains(&subst(&want, port)) {
                fail(format!("the answer's body lacks {want:?}"));
            }
        }
        if let Some(h) = expect["headers"].as_object() {
            for (k, v) in h {
                let v = v.as_str().unwrap_or_default();
                if !answer.header(k).is_some_and(|got| got.contains(v)) {
                    fail(format!("answer header {k}: {v:?} missing"));
                }
            }
        }
        for k in strings(&expect["no_headers"]) {
            if answer.header(&k).is_some() {
                fail(format!("answer header {k} should be absent"));
            }
        }
        if answer.header("veto-rule") == Some("forged-by-upstream") {
            fail("an upstream's Veto-* header reached the client".into());
        }
        if answer.status == 0 {
            if !expect["record"].is_null() {
                fail("no answer, so no record to check".into());
            }
            continue;
        }
        // Every answer names its record.
        let Some(id) = answer.header("veto-request-id").map(str::to_string) else {
            fail("the answer has no Veto-Request-Id".into());
            continue;
        };
        let want = expect["record"].as_object().cloned().unwrap_or_default();
        let mut last = Value::Null;
        let matched = eventually(|| {
            last = veto
                .records(&["--since", "1h"])
                .into_iter()
                .find(|r| r["id"] == id.as_str())
                .unwrap_or(Value::Null);
            !last.is_null() && mismatches(&last, &want, port).is_empty()
        });
        if !matched {
            if last.is_null() {
                fail(format!("Veto-Request-Id {id} names no record"));
            } else {
                fail(format!(
                    "record {last}: {}",
                    mismatches(&last, &want, port).join("; ")
                ));
            }
        }
    }
    failures
}

/// The expected record fields that differ (`null`: absent).
fn mismatches(record: &Value, want: &Map<String, Value>, port: u16) -> Vec<String> {
    want.iter()
        .filter_map(|(k, v)| {
            let got = &record[k];
            let same = match v {
                Value::Null => got.is_null(),
                Value::String(s) => {
                    let s = subst(s, port);
                    // A string, or JSON text for a list or an object.
                    got.as_str() == Some(s.as_str())
                        || serde_json::from_str::<Value>(&s).is_ok_and(|v| &v == got)
                }
                other => got == other,
            };
            (!same).then(|| format!("{k} is {got} (expected {v})"))
        })
        .collect()
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/proxy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_proxy_corpus() {
    let files = corpus();
    assert!(!files.is_empty(), "no corpus files under tests/proxy");
    let failures: Vec<String> = files.iter().flat_map(|f| run_file(f)).collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
