//! torchattacks as a contender: `benches/torchattacks_pgd.py` kept running beside the benchmark,
//! one JSON command per line, so that its runs interleave with the others.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// torch and torchattacks versions and the thread count, as the script reports them.
    pub versions: Value,
}

impl Peer {
    /// Starts the script with the Python of ROBUSTD_PYTHON (default: the project's .venv); the
    /// reason when there is no such Python or it cannot import torchattacks.
    pub fn start(root: &Path, threads: i32, device: &str, optimize: bool) -> Result<Self, String> {
        let python = std::env::var("ROBUSTD_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        if !python.exists() {
            return Err(format!(
                "no Python at {} (set ROBUSTD_PYTHON)",
                python.display()
            ));
        }
        let mut child = Command::new(&python)
            .arg(root.join("benches/torchattacks_pgd.py"))
            // The malloc settings robustd's worker and this benchmark run with.
            .env("GLIBC_TUNABLES", robustd::worker::malloc_tunables())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut peer = Self {
            child,
            stdin,
            stdout,
            versions: Value::Null,
        };
        peer.versions = peer.call(&json!({
            "op": "setup", "threads": threads, "device": device, "optimize": optimize,
        }))?;
        Ok(peer)
    }

    /// Loads a TorchScript file, its card and a safetensors file of inputs `x` and labels `y`.
    pub fn load(&mut self, name: &str, model: &Path, card: &Path, data: &Path) {
        self.call(&json!({
            "op": "load", "name": name, "model": model, "card": card, "data": data,
        }))
        .expect("the torchattacks script loads the model");
    }

    /// One torchattacks PGD run on the first `batch` samples, timed inside the script.
    pub fn pgd(&mut self, name: &str, batch: usize, eps: f64, alpha: f64, steps: u32) -> Duration {
        let answer = self
            .call(&json!({
                "op": "pgd", "name": name, "batch": batch, "eps": eps, "alpha": alpha, "steps": steps,
            }))
            .expect("the torchattacks script runs PGD");
        Duration::from_secs_f64(answer["seconds"].as_f64().expect("seconds"))
    }

    fn call(&mut self, command: &Value) -> Result<Value, String> {
        let sent = writeln!(self.stdin, "{command}").and_then(|_| self.stdin.flush());
        sent.map_err(|e| format!("the torchattacks script stopped: {e}"))?;
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line);
        if !matches!(read, Ok(n) if n > 0) {
            return Err("the torchattacks script stopped (see its error above)".to_owned());
        }
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
        match answer.get("error") {
            Some(error) => Err(format!("torchattacks script: {error}")),
            None => Ok(answer),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({ "op": "quit" }));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
