//! A real `robustd serve` process for integration tests: started on a free port with the shipped
//! models, talked to over HTTP, stopped (SIGTERM) when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python (ROBUSTD_PYTHON, or the one in .venv), with torch and the reference
/// tools.
pub fn python() -> PathBuf {
    std::env::var_os("ROBUSTD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// The card of shipped model `shipped` (models/{shipped}.json), renamed `name`.
pub fn card(shipped: &str, name: &str) -> Value {
    let path = repo_root().join("models").join(format!("{shipped}.json"));
    let mut card: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    card["name"] = Value::from(name);
    card
}

pub fn robustd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_robustd"))
}

pub struct TestServer {
    child: Child,
    pub base: String,
    /// Lines the server wrote to stderr after its start line.
    pub log: mpsc::Receiver<String>,
    /// A data folder made for this server alone, removed when it is dropped.
    data_dir: Option<PathBuf>,
    /// The admin token given with `--admin-token`, if any: the helpers below send it.
    pub token: Option<String>,
    client: reqwest::Client,
}

impl TestServer {
    /// Starts a server on the shipped models and waits until `digits_cnn` is ready.
    pub async fn start(extra: &[&str]) -> Self {
        let server = Self::spawn(extra);
        server.wait_ready("digits_cnn").await;
        server
    }

    /// Starts a server without waiting for any model.
    pub fn spawn(extra: &[&str]) -> Self {
        let mut command = robustd();
        command.args(["serve", "--port", "0"]);
        if !extra.contains(&"--models") {
            command.arg("--models").arg(repo_root().join("models"));
        }
        let own_data = !extra.contains(&"--data-dir");
        let data_dir = std::env::temp_dir().join(format!("robustd-test-{}", uuid::Uuid::new_v4()));
        if own_data {
            command.arg("--data-dir").arg(&data_dir);
        }
        let mut child = command
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("ROBUSTD_TEST_SERVER_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start robustd serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
                if tx.send(line).is_err() {
                    // Keep draining so the server never blocks on a full pipe.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server printed its listening line in time");
            if let Some(rest) = line.split("address=").nth(1) {
                if line.contains("robustd listening") {
                    break rest.split_whitespace().next().unwrap().to_owned();
                }
            }
        };
        let token = extra
            .iter()
            .position(|a| *a == "--admin-token")
            .and_then(|i| extra.get(i + 1))
            .map(|t| t.to_string());
        Self {
            child,
            base: format!("http://{address}"),
            log: rx,
            data_dir: own_data.then_some(data_dir),
            token,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A GET of `path` with the server's admin token, if it has one.
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_token(self.client.get(self.url(path)))
    }

    fn with_token(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// GETs `path` and reads the answer as JSON, whatever its status.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .get(path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: the answer is not JSON: {e}"))
    }

    /// POSTs `body` as JSON to `path`, with the server's admin token if it has one, and reads
    /// the answer as JSON, whatever its status.
    pub async fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self
            .with_token(self.client.post(self.url(path)).json(body))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: the answer is not JSON: {e}"))
    }

    /// Polls evaluation `id` until `done` holds for its status, which it returns; fails the
    /// test with the last status after `within`.
    pub async fn wait_for_job(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.get_json(&format!("/v2/evaluations/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "evaluation {id} did not get there within {within:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every model in models/ is ready: they load one after another at start.
    pub async fn wait_all_ready(&self) {
        for entry in std::fs::read_dir(repo_root().join("models"))
            .unwrap()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let card: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                self.wait_ready(card["name"].as_str().unwrap()).await;
            }
        }
    }

    pub async fn wait_ready(&self, model: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            let ready = self.get(&format!("/v2/models/{model}/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("model {model} was not ready within 180 s");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL, as a crash would; its workers exit when their pipes close.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The shipped digits test split: inputs [n, 1, 8, 8] in [0, 1] and labels.
pub struct Digits {
    pub x: Vec<f32>,
    pub y: Vec<i64>,
}

impl Digits {
    pub fn load() -> Self {
        let path = repo_root().join("models/datasets/digits_test.safetensors");
        let bytes = std::fs::read(path).expect("digits test split");
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let x = tensors.tensor("x").unwrap();
        let y = tensors.tensor("y").unwrap();
        Self {
            x: x.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            y: y.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Samples `range` as flat values.
    pub fn inputs(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        self.x[range.start * 64..range.end * 64].to_vec()
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Processes whose parent is `pid`, read from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the parenthesised command name: state, then the parent's pid.
        let Some(rest) = stat.rsplit(')').next() else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// Whether a process exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}
