//! `zerobias::hub` against a fake Hugging Face Hub on 127.0.0.1 (no external
//! network). The fake speaks just enough HTTP/1.1 for hf-hub 0.4.3's blocking
//! client: a `Range: bytes=0-0` metadata GET that must carry `etag`,
//! `x-repo-commit` and `Content-Range: bytes 0-0/SIZE`, then one
//! `Range: bytes=0-` GET for the body (no parallel chunks in the sync client).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zerobias::hub::{
    fetch_file, parse_model_spec, resolve_model, HubConfig, HubError, ModelSource,
};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const ETAG: &str = "5f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const FILE: &str = "model.safetensors";
/// Safety net so a test that goes wrong cannot leave the server running.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 32;

/// One file the fake hub serves at `/{repo}/resolve/{revision}/{file}`.
struct Served {
    repo: &'static str,
    revision: &'static str,
    file: &'static str,
    body: Vec<u8>,
}

/// A fake hub thread; stops on drop (or after `MAX_CONNECTIONS` /
/// `SERVER_LIFETIME`).
struct FakeHub {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// `status` answers every request with that bare status (e.g. 500);
    /// `None` serves `files` and 404s the rest.
    fn start(files: Vec<Served>, status: Option<u16>) -> FakeHub {
        no_proxy();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake hub");
        // Non-blocking accept lets the thread notice `stop` promptly.
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                let deadline = Instant::now() + SERVER_LIFETIME;
                let mut connections = 0;
                while !stop.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                    && connections < MAX_CONNECTIONS
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections += 1;
                            serve(stream, &files, status, &log);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        FakeHub {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests seen so far, as `"{path} range={range}"`.
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request per connection (`Connection: close`, so the client
/// never reuses it).
fn serve(mut stream: TcpStream, files: &[Served], status: Option<u16>, log: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_owned());
    log.lock()
        .unwrap()
        .push(format!("{path} range={}", range.as_deref().unwrap_or("-")));

    let found = files
        .iter()
        .find(|f| path == format!("/{}/resolve/{}/{}", f.repo, f.revision, f.file));
    let response = match (status, found) {
        // 200 without the Hub headers: "some other web server".
        (Some(code), _) => plain(code, "", "", b"<html>not a hub</html>"),
        // Mimics the Hub's answer for unknown repos.
        (None, None) => plain(
            404,
            "Not Found",
            "x-error-code: RepositoryNotFound\r\n",
            b"Repository not found",
        ),
        (None, Some(f)) => file_response(f, range.as_deref()),
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}

fn plain(code: u16, reason: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// 206 with the requested byte range and the headers hf-hub's metadata step
/// requires (it strips the quotes from the etag).
fn file_response(f: &Served, range: Option<&str>) -> Vec<u8> {
    let size = f.body.len();
    let (start, end) = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(s, e)| {
            let start = s.parse().unwrap_or(0);
            let end = e.parse().unwrap_or(size - 1).min(size - 1);
            (start, end)
        })
        .unwrap_or((0, size - 1));
    let body = &f.body[start..=end];
    let mut r = format!(
        "HTTP/1.1 206 Partial Content\r\netag: \"{ETAG}\"\r\nx-repo-commit: {COMMIT}\r\n\
         Content-Range: bytes {start}-{end}/{size}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// ureq (via hf-hub) honours *_PROXY variables but not NO_PROXY, which would
/// route 127.0.0.1 through a proxy. Cleared once, before any client exists.
fn no_proxy() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for key in [
            "ALL_PROXY",
            "all_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ] {
            std::env::remove_var(key);
        }
    });
}

fn weights() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 31 % 251) as u8).collect()
}

fn config(endpoint: String, cache: &Path, offline: bool) -> HubConfig {
    HubConfig {
        endpoint,
        cache_dir: cache.to_path_buf(),
        offline,
        token: None,
    }
}

fn snapshot_path(cache: &Path, repo_folder: &str) -> PathBuf {
    cache
        .join(repo_folder)
        .join("snapshots")
        .join(COMMIT)
        .join(FILE)
}

#[test]
fn download_returns_served_bytes_in_hf_cache_layout() {
    let cache = tempfile::tempdir().unwrap();
    let hub = FakeHub::start(
        vec![Served {
            repo: "acme/tiny-vit",
            revision: "main",
            file: FILE,
            body: weights(),
        }],
        None,
    );
    let cfg = config(hub.endpoint(), cache.path(), false);

    let path = fetch_file(&cfg, "acme/tiny-vit", "main", FILE).unwrap();

    assert_eq!(path, snapshot_path(cache.path(), "models--acme--tiny-vit"));
    assert!(path.starts_with(cache.path()));
    assert_eq!(std::fs::read(&path).unwrap(), weights());
    let repo_dir = cache.path().join("models--acme--tiny-vit");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(ETAG)).unwrap(),
        weights()
    );
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new("../../blobs").join(ETAG)
    );
    // Exactly the metadata probe, then one whole-body request.
    let want = |range: &str| format!("/acme/tiny-vit/resolve/main/{FILE} range={range}");
    assert_eq!(hub.requests(), vec![want("bytes=0-0"), want("bytes=0-")]);
}

#[test]
fn offline_second_call_uses_cache_without_network() {
    let cache = tempfile::tempdir().unwrap();
    let hub = FakeHub::start(
        vec![Served {
            repo: "acme/tiny-vit",
            revision: "main",
            file: FILE,
            body: weights(),
        }],
        None,
    );
    let online = fetch_file(
        &config(hub.endpoint(), cache.path(), false),
        "acme/tiny-vit",
        "main",
        FILE,
    )
    .unwrap();
    let seen = hub.requests().len();
    let endpoint = hub.endpoint();

    let offline_cfg = config(endpoint.clone(), cache.path(), true);
    let offline = fetch_file(&offline_cfg, "acme/tiny-vit", "main", FILE).unwrap();
    assert_eq!(offline, online);
    // A commit-hash revision goes straight to the snapshot (no refs/ entry).
    let by_commit = fetch_file(&offline_cfg, "acme/tiny-vit", COMMIT, FILE).unwrap();
    assert_eq!(by_commit, online);
    assert_eq!(
        hub.requests().len(),
        seen,
        "offline mode contacted the server"
    );

    // With the server gone, both offline and online calls are served from the cache.
    drop(hub);
    assert_eq!(
        fetch_file(&offline_cfg, "acme/tiny-vit", "main", FILE).unwrap(),
        online
    );
    assert_eq!(
        resolve_model(
            &config(endpoint, cache.path(), false),
            "acme/tiny-vit",
            None
        )
        .unwrap(),
        online
    );
}

#[test]
fn offline_and_not_cached_is_offline_error() {
    let cache = tempfile::tempdir().unwrap();
    let hub = FakeHub::start(Vec::new(), None);
    let cfg = config(hub.endpoint(), cache.path(), true);

    let err = fetch_file(&cfg, "acme/never-downloaded", "main", FILE).unwrap_err();

    assert!(
        matches!(&err, HubError::Offline { repo, file, cache: c }
            if repo == "acme/never-downloaded" && file == FILE && c == cache.path()),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("acme/never-downloaded"), "{msg}");
    assert!(msg.contains("offline mode is on"), "{msg}");
    assert!(msg.contains(&cache.path().display().to_string()), "{msg}");
    assert!(
        hub.requests().is_empty(),
        "offline mode contacted the server"
    );
}

#[test]
fn unknown_repo_is_not_found() {
    let cache = tempfile::tempdir().unwrap();
    let hub = FakeHub::start(Vec::new(), None);
    let cfg = config(hub.endpoint(), cache.path(), false);

    let err = resolve_model(&cfg, "acme/no-such-model", None).unwrap_err();

    assert!(
        matches!(&err, HubError::NotFound { repo, file }
            if repo == "acme/no-such-model" && file == FILE),
        "{err:?}"
    );
    assert!(err.to_string().contains("acme/no-such-model"), "{err}");
    assert_eq!(hub.requests().len(), 1);
}

#[test]
fn revision_from_spec_or_override_is_requested() {
    let cache = tempfile::tempdir().unwrap();
    let served = |revision| Served {
        repo: "acme/tiny-vit",
        revision,
        file: FILE,
        body: weights(),
    };
    let hub = FakeHub::start(vec![served("v1"), served("refs%2Fpr%2F2")], None);
    let cfg = config(hub.endpoint(), cache.path(), false);
    let repo_dir = cache.path().join("models--acme--tiny-vit");

    let path = resolve_model(&cfg, "acme/tiny-vit@v1", None).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), weights());
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap(),
        COMMIT
    );
    // hf-hub percent-encodes '/' in the URL and nests the ref file.
    resolve_model(&cfg, "acme/tiny-vit@main", Some("refs/pr/2")).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/refs/pr/2")).unwrap(),
        COMMIT
    );
}

#[test]
fn server_errors_are_network_errors() {
    let cache = tempfile::tempdir().unwrap();
    let fetch = |endpoint: String| {
        let err = fetch_file(
            &config(endpoint, cache.path(), false),
            "acme/tiny-vit",
            "main",
            FILE,
        )
        .unwrap_err();
        assert!(
            matches!(&err, HubError::Network { repo, .. } if repo == "acme/tiny-vit"),
            "{err:?}"
        );
        err.to_string()
    };

    let hub = FakeHub::start(Vec::new(), Some(500));
    let msg = fetch(hub.endpoint());
    assert!(msg.contains("HTTP 500"), "{msg}");

    // A plain web server, not a hub: hf-hub needs the etag header.
    let hub = FakeHub::start(Vec::new(), Some(200));
    let msg = fetch(hub.endpoint());
    assert!(msg.contains("`etag` header"), "{msg}");

    // Nothing listening: connection refused, with a hint about offline mode.
    let closed = hub.endpoint();
    drop(hub);
    let msg = fetch(closed);
    assert!(msg.contains("HF_HUB_OFFLINE"), "{msg}");
}

#[test]
fn parse_model_spec_cases() {
    let dir = tempfile::tempdir().unwrap();
    let weights_file = dir.path().join("weights.safetensors");
    std::fs::write(&weights_file, b"x").unwrap();
    let other_file = dir.path().join("weights.bin");
    std::fs::write(&other_file, b"x").unwrap();
    let path_str = |p: &Path| p.to_str().unwrap().to_owned();

    // Existing local files, whatever their extension.
    for file in [&weights_file, &other_file] {
        assert_eq!(
            parse_model_spec(&path_str(file)).unwrap(),
            ModelSource::LocalFile(file.clone())
        );
    }
    assert_eq!(
        resolve_model(
            &config("http://127.0.0.1:9".into(), dir.path(), true),
            &path_str(&weights_file),
            None
        )
        .unwrap(),
        weights_file
    );

    // Path-looking but missing.
    let missing = dir.path().join("missing.safetensors");
    for spec in [
        path_str(&missing),
        "nowhere/model.safetensors".to_owned(),
        "./acme/tiny-vit".to_owned(),
    ] {
        let err = parse_model_spec(&spec).unwrap_err();
        assert!(
            matches!(&err, HubError::LocalMissing { path } if path == Path::new(&spec)),
            "{spec}: {err:?}"
        );
        assert!(err.to_string().contains(&spec), "{err}");
    }

    // Hub ids.
    assert_eq!(
        parse_model_spec("google/vit-base-patch16-224").unwrap(),
        ModelSource::Hub {
            repo: "google/vit-base-patch16-224".into(),
            revision: "main".into()
        }
    );
    assert_eq!(
        parse_model_spec("acme/tiny_vit.v2@v1.0").unwrap(),
        ModelSource::Hub {
            repo: "acme/tiny_vit.v2".into(),
            revision: "v1.0".into()
        }
    );

    // Garbage.
    for spec in [
        "",
        "gpt2",
        "a/b/c",
        "acme/tiny vit",
        "acme/@main",
        "acme/tiny-vit@",
        "acme/tiny-vit@../../x",
        "acme/ti*ny",
    ] {
        let err = parse_model_spec(spec).unwrap_err();
        assert!(
            matches!(&err, HubError::BadSpec { spec: s, .. } if s == spec),
            "{spec}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{spec}`")), "{err}");
    }
    // A directory is not a model file.
    let err = parse_model_spec(&path_str(dir.path())).unwrap_err();
    assert!(matches!(err, HubError::BadSpec { .. }), "{err:?}");
}
