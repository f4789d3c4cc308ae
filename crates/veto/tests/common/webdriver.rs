//! A minimal WebDriver client for the dashboard tests: Debian's headless
//! `chromium` driven by `chromedriver` over its HTTP API, spoken with a
//! plain TcpStream and serde_json (no browser-automation crate to build).
//! One chromedriver per browser, on a free loopback port, killed on drop.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The key W3C WebDriver gives element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn found(program: &str) -> bool {
    Path::new(program).is_file()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Where screenshots go: `target/dashboard-screenshots/` (or under
/// CARGO_TARGET_DIR), kept as test artifacts.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless chromium session. Fails loudly,
    /// never skips, when either is missing.
    pub fn start() -> Browser {
        assert!(
            found(CHROMIUM) && found("chromedriver"),
            "the dashboard tests need Debian's chromium and chromedriver \
             ({CHROMIUM}, chromedriver on PATH): run scripts/test, which installs \
             the `chromium` and `chromium-driver` packages"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                profile.path().join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let up = Instant::now();
        while b.raw("GET", "/status", None).is_err() {
            assert!(
                up.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let user_data = b._profile.path().join("chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-sync", "--window-size=1440,1000",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        }}});
        let v = b
            .raw("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("chromium did not start: {e}"));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver call: the `value` of the answer, or the error.
    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| format!("send: {e}"))?;
        // chromedriver keeps the connection open whatever `Connection`
        // says: read the head, then exactly the body it announces.
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        let split = loop {
            if let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before an answer".into());
            }
            out.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
        let mut rest = out[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let done = match length {
                Some(n) => rest.len() >= n,
                None if chunked => rest.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        let body = if chunked {
            dechunk(&rest)
        } else {
            rest.truncate(length.unwrap_or(rest.len()));
            rest
        };
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{status}: {e}: {}", String::from_utf8_lossy(&body)))?;
        if status != 200 {
            return Err(format!(
                "{status} {}: {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.raw(method, &path, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Elements matching a CSS selector, as WebDriver references.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(String::from))
            .collect()
    }

    pub fn find(&self, css: &str) -> Option<String> {
        self.find_all(css).into_iter().next()
    }

    /// Waits for an element, up to `secs`.
    pub fn wait(&self, css: &str, secs: u64) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no `{css}` after {secs} s; page text:\n{}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `f` holds, polling the page, up to `secs`.
    pub fn until(&self, what: &str, secs: u64, mut f: impl FnMut(&Browser) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{what}: not after {secs} s; page text:\n{}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, el: &str) {
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    pub fn send_keys(&self, el: &str, text: &str) {
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn clear(&self, el: &str) {
        self.call("POST", &format!("/element/{el}/clear"), Some(json!({})));
    }

    /// The rendered text of an element.
    pub fn text(&self, el: &str) -> String {
        self.call("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered texts of every element matching, read in one script:
    /// a page that re-renders between two calls cannot leave a stale
    /// reference behind.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let v = self.script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)",
            json!([css]),
        );
        v.as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The text of the first element matching, or "" if none.
    pub fn text_of(&self, css: &str) -> String {
        self.texts(css).into_iter().next().unwrap_or_default()
    }

    pub fn page_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs a script in the page; `return` gives its value.
    pub fn script(&self, js: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": args})),
        )
    }

    /// Runs an async script: it calls `arguments[arguments.length - 1]`
    /// with its result.
    pub fn script_async(&self, js: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": js, "args": args})),
        )
    }

    /// Saves a PNG of the viewport under the screenshot directory.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("a screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.raw("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
